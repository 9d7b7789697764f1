"""Trace ids on ``LogRecord``s, and the OTLP log handler.

Default: obskit never adds a console/stream handler and never calls ``logging.basicConfig``; the application's own
output is unchanged. With the logs signal on, one extra handler on the root logger exports records over OTLP, so
nothing is printed twice. Every record (exported or not) gains ``trace_id``/``span_id`` for formatters, e.g.
``%(asctime)s %(levelname)s [trace_id=%(trace_id)s span_id=%(span_id)s] %(message)s``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from opentelemetry import trace

# Written here rather than with contrib's LoggingInstrumentor: that one names the fields otelTraceID/otelSpanID
# (the SPEC names them trace_id/span_id) and can call logging.basicConfig, which would change the app's output.
_INVALID_TRACE_ID = "0" * 32
_INVALID_SPAN_ID = "0" * 16
_installed_factory: Callable[..., logging.LogRecord] | None = None
_previous_factory: Callable[..., logging.LogRecord] | None = None

# Records of these loggers are never exported: an exporter that logs its own failure must not feed itself.
_NOT_EXPORTED = ("opentelemetry", "obskit", "grpc", "urllib3", "requests")
_CONTEXT_KEYS = frozenset({"trace_id", "span_id", "trace_sampled"})


def install_record_factory() -> None:
    """Add ``trace_id``, ``span_id`` and ``trace_sampled`` to every LogRecord created from now on (idempotent)."""
    global _installed_factory, _previous_factory
    current = logging.getLogRecordFactory()
    if current is _installed_factory:
        return
    previous = current

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
            record.trace_sampled = context.trace_flags.sampled
        else:
            record.trace_id = _INVALID_TRACE_ID
            record.span_id = _INVALID_SPAN_ID
            record.trace_sampled = False
        return record

    _previous_factory, _installed_factory = previous, factory
    logging.setLogRecordFactory(factory)
    if logging.Logger.makeRecord is not _make_record:
        logging.Logger.makeRecord = _make_record  # type: ignore[method-assign]


def uninstall_record_factory() -> None:
    global _installed_factory, _previous_factory
    if _installed_factory is not None and logging.getLogRecordFactory() is _installed_factory:
        assert _previous_factory is not None
        logging.setLogRecordFactory(_previous_factory)
    _installed_factory = _previous_factory = None
    if logging.Logger.makeRecord is _make_record:
        logging.Logger.makeRecord = _ORIGINAL_MAKE_RECORD  # type: ignore[method-assign]


_ORIGINAL_MAKE_RECORD: Final = logging.Logger.makeRecord


def _make_record(
    self: logging.Logger,
    name: str,
    level: int,
    fn: str,
    lno: int,
    msg: object,
    args: Any,
    exc_info: Any,
    func: str | None = None,
    extra: Mapping[str, object] | None = None,
    sinfo: str | None = None,
) -> logging.LogRecord:
    """``Logger.makeRecord``, where an app's own ``extra={"trace_id": ...}`` wins over the factory's value.

    The stock one raises KeyError ("Attempt to overwrite 'trace_id' in LogRecord") for a key the record factory
    set: that would raise inside the app's logging call, in its request handler.
    """
    if extra is not None and not _CONTEXT_KEYS.isdisjoint(extra):
        given = {key: extra[key] for key in _CONTEXT_KEYS if key in extra}
        rest = {key: value for key, value in extra.items() if key not in _CONTEXT_KEYS}
        record = _ORIGINAL_MAKE_RECORD(self, name, level, fn, lno, msg, args, exc_info, func, rest, sinfo)
        record.__dict__.update(given)
        return record
    return _ORIGINAL_MAKE_RECORD(self, name, level, fn, lno, msg, args, exc_info, func, extra, sinfo)


def _exportable(record: logging.LogRecord) -> bool:
    name = record.name
    return not any(name == prefix or name.startswith(prefix + ".") for prefix in _NOT_EXPORTED)


def _handled_elsewhere(record: logging.LogRecord, ours: logging.Handler) -> bool:
    """Whether any handler but ours sees this record, walking up the hierarchy as ``Logger.callHandlers`` does."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        if any(h is not ours and record.levelno >= h.level for h in logger.handlers):
            return True
        if not logger.propagate:
            return False
        logger = logger.parent
    return False


def make_handler(logger_provider: Any, level: int) -> logging.Handler:
    """The OTLP handler (contrib's LoggingHandler), minus the trace-context fields it would copy as attributes.

    When the application configured no logging at all, Python prints warnings through ``logging.lastResort``
    only while the root logger has no handler; obskit's handler keeps that output as it was.
    """
    from opentelemetry.instrumentation.logging.handler import LoggingHandler

    keep_last_resort = not logging.getLogger().handlers

    class _Handler(LoggingHandler):
        def _get_attributes(self, record: logging.LogRecord) -> Any:
            attributes, event_name = super()._get_attributes(record)
            for key in _CONTEXT_KEYS:
                attributes.pop(key, None)
            return attributes, event_name

        def handle(self, record: logging.LogRecord) -> bool:
            last_resort = logging.lastResort
            if (
                keep_last_resort
                and last_resort is not None
                and record.levelno >= last_resort.level
                and not _handled_elsewhere(record, self)
            ):
                last_resort.handle(record)
            return bool(super().handle(record))

    handler = _Handler(level=level, logger_provider=logger_provider)
    handler.addFilter(_exportable)
    return handler


_current_handler: logging.Handler | None = None
_config_functions_patched = False


def attach_handler(handler: logging.Handler) -> None:
    """Put the OTLP handler on the root logger, where ``basicConfig``/``dictConfig`` neither see nor remove it."""
    global _current_handler
    _patch_config_functions()
    _current_handler = handler
    logging.getLogger().addHandler(handler)


def detach_handler(handler: logging.Handler) -> None:
    global _current_handler
    logging.getLogger().removeHandler(handler)
    if _current_handler is handler:
        _current_handler = None


def _patch_config_functions() -> None:
    # basicConfig() does nothing when the root logger already has a handler: with obskit's handler attached
    # first, the application's own logging setup would silently be skipped. The handler is hidden for the call.
    global _config_functions_patched
    if _config_functions_patched:
        return
    _config_functions_patched = True
    import logging.config

    import wrapt

    def hide_handler(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
        handler = _current_handler
        root = logging.getLogger()
        hidden = handler is not None and handler in root.handlers
        if hidden:
            root.removeHandler(handler)  # type: ignore[arg-type]
        try:
            return wrapped(*args, **kwargs)
        finally:
            if hidden:
                root.addHandler(handler)  # type: ignore[arg-type]

    wrapt.wrap_function_wrapper(logging, "basicConfig", hide_handler)
    wrapt.wrap_function_wrapper(logging.config, "dictConfig", hide_handler)
    wrapt.wrap_function_wrapper(logging.config, "fileConfig", hide_handler)
