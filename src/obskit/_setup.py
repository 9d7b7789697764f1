"""``init()``, ``shutdown()``, ``force_flush()`` and the ``Handle``: the only module that touches OTel globals."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from opentelemetry import metrics as metrics_api
from opentelemetry import propagate, trace
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor, SynchronousMultiLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace import sampling as sampling_sdk

from . import (
    _aggregate,
    _buffer,
    _exporters,
    _guard,
    _integrations,
    _logging,
    _producer,
    _resource,
    _safety,
    _stages,
    _stagespan,
    _tracer,
)
from . import _semconv as sc
from ._buffer import ExportBuffer, TelemetryStats
from ._config import Settings, load_settings
from ._integrations import _http

_logger = logging.getLogger("obskit")

_PROCESS_METRICS: Mapping[str, list[str] | None] = {
    "process.cpu.time": ["user", "system"],
    "process.cpu.utilization": ["user", "system"],
    "process.memory.usage": None,
    "process.memory.virtual": None,
    "process.open_file_descriptor.count": None,
    "process.thread.count": None,
    "process.context_switches": ["involuntary", "voluntary"],
    "cpython.gc.collections": None,
}

# Attribute keys of the HTTP server metrics (SPEC §3): a View bounds them at the SDK whatever contrib adds.
_HTTP_DURATION_KEYS = {
    sc.ATTR_HTTP_REQUEST_METHOD,
    sc.ATTR_HTTP_ROUTE,
    sc.ATTR_HTTP_RESPONSE_STATUS_CODE,
    sc.ATTR_URL_SCHEME,
    sc.ATTR_ERROR_TYPE,
}
_HTTP_ACTIVE_KEYS = {sc.ATTR_HTTP_REQUEST_METHOD, sc.ATTR_URL_SCHEME}


class Handle:
    """What ``init()`` returns: the effective settings and the providers, with ``force_flush()`` and ``shutdown()``.

    Example:
        >>> handle = obskit.init(service_name="fraud-scorer")  # doctest: +SKIP
        >>> handle.force_flush(timeout=2.0)  # doctest: +SKIP
        True
    """

    def __init__(
        self,
        settings: Settings,
        *,
        arguments: Mapping[str, Any],
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        logger_provider: LoggerProvider | None = None,
        resource: Resource | None = None,
        on_shutdown: tuple[Callable[[], None], ...] = (),
        on_fork: tuple[Callable[[], None], ...] = (),
        export_buffer: ExportBuffer | None = None,
    ) -> None:
        self.settings = settings
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.logger_provider = logger_provider
        self.resource = resource
        self._arguments = dict(arguments)
        self._on_shutdown = on_shutdown
        self._on_fork = on_fork
        self._buffer = export_buffer
        self._shut_down = False
        self._shutdown_done = threading.Event()
        self._shutdown_result = True
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """False under ``OTEL_SDK_DISABLED=true``: nothing was installed."""
        return not self.settings.sdk_disabled

    def __repr__(self) -> str:
        return f"<obskit.Handle service={self.settings.service_name!r} enabled={self.enabled}>"

    def _providers(self) -> list[Any]:
        # The meter provider last: its final collection then counts what the others handed over.
        return [p for p in (self.tracer_provider, self.logger_provider, self.meter_provider) if p is not None]

    def telemetry_stats(self) -> dict[str, TelemetryStats]:
        """Accounting of every signal exported over OTLP, keyed ``"spans"``, ``"metric_points"`` and ``"logs"``.

        For each, ``produced == exported + dropped_total + buffered`` holds exactly; the same counts are exported as
        ``obskit.telemetry.exported`` and ``obskit.telemetry.dropped``. Empty when nothing is exported over OTLP.

        Example:
            >>> stats = handle.telemetry_stats()["spans"]  # doctest: +SKIP
            >>> stats.produced == stats.exported + stats.dropped_total + stats.buffered  # doctest: +SKIP
            True
        """
        return {} if self._buffer is None else self._buffer.stats()

    def force_flush(self, timeout: float | None = None) -> bool:
        """Export everything recorded so far; waits at most ``timeout`` seconds (default OBSKIT_SHUTDOWN_TIMEOUT).

        Returns:
            True when every signal was flushed within the deadline.
        """
        deadline = self.settings.shutdown_timeout if timeout is None else timeout
        millis = int(deadline * 1000)
        end = time.monotonic() + deadline

        def flush() -> bool:
            results = [bool(p.force_flush(timeout_millis=millis)) for p in self._providers()]
            if self._buffer is not None:
                results.append(self._buffer.flush(end - time.monotonic() - _SHUTDOWN_MARGIN))
            return all(results)

        return _run_with_deadline(flush, deadline, "force_flush")

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush and stop every provider within ``timeout`` seconds (default OBSKIT_SHUTDOWN_TIMEOUT).

        Idempotent; runs by itself at interpreter exit (also after SIGTERM to uvicorn and gunicorn workers). A call
        made while another is in progress waits for it (at most ``timeout``) and returns its outcome.

        Returns:
            True when everything was flushed and closed within the deadline.
        """
        deadline = self.settings.shutdown_timeout if timeout is None else timeout
        with self._lock:
            first = not self._shut_down
            self._shut_down = True
        if not first:
            return self._shutdown_done.wait(deadline) and self._shutdown_result
        try:
            self._shutdown_result = self._shutdown(deadline)
        finally:
            self._shutdown_done.set()
        return self._shutdown_result

    def _shutdown(self, deadline: float) -> bool:
        end = time.monotonic() + deadline
        for callback in self._on_shutdown:
            with _safety.swallow_errors("shutdown"):
                callback()

        def close() -> bool:
            # Providers first: their batch processors and reader hand their last data to the export buffer (no
            # network: that is instant); then the buffer sends what it holds, within what is left of the deadline.
            for provider in self._providers():
                with _safety.swallow_errors("shutdown"):
                    if isinstance(provider, MeterProvider):
                        provider.shutdown(timeout_millis=max(end - time.monotonic(), 0.0) * 1000)
                    else:
                        provider.shutdown()
            if self._buffer is not None:
                # A little is kept back so the waiting thread sees the outcome before its own deadline.
                return self._buffer.shutdown(end - time.monotonic() - _SHUTDOWN_MARGIN)
            return True

        return _run_with_deadline(close, deadline, "shutdown")


_SHUTDOWN_MARGIN = 0.1


def _run_with_deadline(work: Callable[[], bool], deadline: float, what: str) -> bool:
    """Run ``work`` in a daemon thread and give up waiting after ``deadline`` seconds.

    The export buffer bounds each send by the deadline itself; the daemon thread is the backstop for anything else
    that could block (a misbehaving processor added by the application), and dies with the process.
    """
    outcome: list[bool] = []

    def target() -> None:
        try:
            outcome.append(work())
        except Exception as exc:
            _safety.record_internal_error(what, exc)
            outcome.append(False)

    thread = threading.Thread(target=target, name=f"obskit-{what}", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # no new threads at interpreter shutdown (3.12+): the work is deadline-bounded anyway
        target()
        return bool(outcome and outcome[0])
    thread.join(deadline)
    if thread.is_alive():
        _logger.warning("obskit %s did not finish within %.1fs; continuing without waiting", what, deadline)
        return False
    return bool(outcome and outcome[0])


# ---------------------------------------------------------------------------------------------------------------

_handle: Handle | None = None
_init_lock = threading.RLock()
_hooks_installed = False


def init(**kwargs: Any) -> Handle:
    """Configure tracing, metrics and logs export and auto-instrument Flask and FastAPI. See ``obskit.init``."""
    global _handle
    with _init_lock:
        if _handle is not None:
            if _handle._shut_down:
                _safety.warn_once(
                    "init-after-shutdown",
                    "obskit.init() after obskit.shutdown(): OpenTelemetry's global providers are set once per "
                    "process, so telemetry stays off until the process restarts",
                )
            elif kwargs != _handle._arguments:
                _safety.warn_once(
                    "init-twice",
                    "obskit.init() was already called with different arguments; the first configuration stays "
                    "in force for the life of the process (OpenTelemetry's global providers are set once)",
                )
            return _handle
        settings = load_settings(os.environ, **kwargs)
        if settings.sdk_disabled:
            _handle = Handle(settings, arguments=kwargs)
            return _handle
        _handle = _build(settings, kwargs)
        _install_process_hooks()
        _http.set_stop_hook(_handle.force_flush)
        return _handle


def _sampler(settings: Settings) -> sampling_sdk.Sampler:
    ratio = 1.0 if settings.sampler_arg is None else float(settings.sampler_arg)
    name = settings.sampler
    samplers: dict[str, Callable[[], sampling_sdk.Sampler]] = {
        "always_on": lambda: sampling_sdk.ALWAYS_ON,
        "always_off": lambda: sampling_sdk.ALWAYS_OFF,
        "traceidratio": lambda: sampling_sdk.TraceIdRatioBased(ratio),
        "parentbased_always_on": lambda: sampling_sdk.ParentBased(sampling_sdk.ALWAYS_ON),
        "parentbased_always_off": lambda: sampling_sdk.ParentBased(sampling_sdk.ALWAYS_OFF),
        "parentbased_traceidratio": lambda: sampling_sdk.ParentBased(sampling_sdk.TraceIdRatioBased(ratio)),
    }
    return samplers[name]()


def _views() -> list[View]:
    return [
        View(instrument_name=sc.METRIC_HTTP_SERVER_REQUEST_DURATION, attribute_keys=_HTTP_DURATION_KEYS),
        View(instrument_name=sc.HTTP_SERVER_ACTIVE_REQUESTS, attribute_keys=_HTTP_ACTIVE_KEYS),
    ]


def _propagator(settings: Settings) -> Any:
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    chosen: list[Any] = []
    for name in settings.propagators:
        if name == "tracecontext":
            chosen.append(TraceContextTextMapPropagator())
        elif name == "baggage":
            chosen.append(W3CBaggagePropagator())
    return CompositePropagator(chosen)


def make_tracer_provider(resource: Resource, sampler: sampling_sdk.Sampler, *, capture_query: bool) -> TracerProvider:
    """The tracer provider of ``init()`` before any exporting processor: lean spans, guarded processors, redaction."""
    # shutdown_on_exit=False: obskit's own at-exit hook shuts everything down once, within the deadline; the SDK's
    # hooks would shut down a second time, unbounded.
    provider = _tracer.LeanTracerProvider(
        resource=resource,
        sampler=sampler,
        shutdown_on_exit=False,
        active_span_processor=_tracer.GuardedSpanProcessors(),
    )
    # First, so that later processors and exporters never see an unredacted URL or credential header.
    provider.add_span_processor(_http.RedactingSpanProcessor(capture_query=capture_query))
    return provider


def _build(settings: Settings, arguments: Mapping[str, Any], capture: Any = None) -> Handle:
    """Build and install the providers; ``capture`` (testing.CapturedTelemetry) replaces the exporters."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = _resource.build_resource(settings)
    export_buffer: ExportBuffer | None = None
    if capture is not None:
        span_exporter, metric_reader, log_exporter = capture.span_exporter, capture.metric_reader, capture.log_exporter
    else:
        export_buffer = _exporters.export_buffer(settings)
        span_exporter = _exporters.span_exporter(settings, export_buffer)
        metric_reader = _exporters.metric_reader(settings, export_buffer)
        log_exporter = _exporters.log_exporter(settings, export_buffer)

    tracer_provider = make_tracer_provider(resource, _sampler(settings), capture_query=_capture_query(settings))
    batch_options: dict[str, Any] = {
        "max_queue_size": settings.bsp_max_queue_size,
        "schedule_delay_millis": settings.bsp_schedule_delay * 1000,
        "max_export_batch_size": min(settings.bsp_max_export_batch_size, settings.bsp_max_queue_size),
    }
    if capture is not None:
        tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    elif isinstance(span_exporter, _buffer.BufferedSpanExporter):
        tracer_provider.add_span_processor(_buffer.AccountedBatchSpanProcessor(span_exporter, **batch_options))
    elif span_exporter is not None:
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter, **batch_options))
    # obskit's own aggregation (stage and HTTP metrics): collected by the reader with the SDK's metrics.
    stage_metrics = _aggregate.Registry()
    if metric_reader is not None:
        _producer.attach(metric_reader, lambda: stage_metrics, resource)
    meter_provider = MeterProvider(
        resource=resource,
        metric_readers=[metric_reader] if metric_reader is not None else [],
        views=_views(),
        shutdown_on_exit=False,
    )
    logger_provider: LoggerProvider | None = None
    handler: logging.Handler | None = None
    if log_exporter is not None:
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, SimpleLogRecordProcessor

        logger_provider = LoggerProvider(
            resource=resource,
            shutdown_on_exit=False,
            multi_log_record_processor=_GuardedLogProcessors(),  # type: ignore[no-untyped-call]
        )
        log_options: dict[str, Any] = {
            "max_queue_size": settings.blrp_max_queue_size,
            "schedule_delay_millis": settings.blrp_schedule_delay * 1000,
        }
        log_processor: LogRecordProcessor
        if capture is not None:
            log_processor = SimpleLogRecordProcessor(log_exporter)
        elif isinstance(log_exporter, _buffer.BufferedLogExporter):
            log_processor = _buffer.AccountedBatchLogRecordProcessor(log_exporter, **log_options)
        else:
            log_processor = BatchLogRecordProcessor(log_exporter, **log_options)
        logger_provider.add_log_record_processor(log_processor)
        handler = _logging.make_handler(logger_provider, settings.log_level)

    guard = _guard.LabelGuard(
        max_values=settings.max_label_values,
        denied=settings.denied_labels,
        max_length=settings.max_label_length,
    )
    # The contrib HTTP instrumentors' metrics are recorded into obskit's own aggregation, like the stage
    # histograms: the SDK re-hashes their attributes on every record (measured in benchmarks/README.md).
    aggregated = _guard.Aggregated(
        stage_metrics,
        {
            sc.METRIC_HTTP_SERVER_REQUEST_DURATION: frozenset(_HTTP_DURATION_KEYS),
            sc.HTTP_SERVER_ACTIVE_REQUESTS: frozenset(_HTTP_ACTIVE_KEYS),
            sc.HTTP_SERVER_REQUEST_BODY_SIZE: None,
            sc.HTTP_SERVER_RESPONSE_BODY_SIZE: None,
        },
    )
    guarded = _guard.GuardedMeterProvider(meter_provider, guard, aggregated)
    traces_on = span_exporter is not None
    # Metrics-only mode: contrib gets a no-op tracer, so no span is even created and sampled out.
    contrib_tracer_provider: Any = tracer_provider if traces_on else trace.NoOpTracerProvider()

    _set_globals(tracer_provider, guarded, logger_provider, _propagator(settings))
    own_meter = meter_provider.get_meter(sc.INSTRUMENTATION_NAME)
    own_meter.create_observable_counter(
        sc.INTERNAL_ERRORS,
        callbacks=[_internal_errors_callback],
        unit="{error}",
        description="Failures inside obskit, swallowed so the application never sees them.",
    )
    if export_buffer is not None:
        _register_buffer_metrics(own_meter, export_buffer)
    _stages.bind(
        contrib_tracer_provider.get_tracer(sc.INSTRUMENTATION_NAME),
        guarded.get_meter(sc.INSTRUMENTATION_NAME),
        model_name=settings.model_name,
        model_version=settings.model_version,
        traces_enabled=traces_on,
        label_filter=lambda instrument, attributes: guard.instrument(instrument).reusable_filter(attributes, None),
        registry=stage_metrics,
        stage_spans=_stagespan.stage_spans,
    )
    _guard.install(guarded)
    _logging.install_record_factory()
    if handler is not None:
        _logging.attach_handler(handler)

    system_metrics = _start_system_metrics(guarded) if settings.system_metrics and metric_reader else None
    _http.configure_capture(headers=settings.capture_headers, query=_capture_query(settings))
    _integrations.configure(
        _integrations.Target(
            tracer_provider=contrib_tracer_provider,
            meter_provider=guarded,
            excluded_urls=settings.excluded_urls,
            auto=settings.auto_instrument,
            middleware=settings.http_instrumentation,
        )
    )

    def detach() -> None:
        _integrations.unconfigure()
        _http.configure_capture()
        _http.set_stop_hook(None)
        _stages.unbind()
        _guard.install(None)
        if handler is not None:
            _logging.detach_handler(handler)
        if system_metrics is not None:
            system_metrics.uninstrument()

    return Handle(
        settings,
        arguments=arguments,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        resource=resource,
        on_shutdown=(detach,),
        on_fork=(lambda: _system_metrics_after_fork(system_metrics),),
        export_buffer=export_buffer,
    )


def _capture_query(settings: Settings) -> bool:
    # Query strings are recorded only when opted in (SPEC §3), and then with sensitive parameters redacted.
    return bool(settings.capture_query)


class _GuardedLogProcessors(SynchronousMultiLogRecordProcessor):
    """As ``_tracer.GuardedSpanProcessors``, for log record processors (they run inside ``logger.info()`` calls)."""

    def on_emit(self, log_record: Any) -> None:
        for processor in self._log_record_processors:
            try:
                processor.on_emit(log_record)
            except Exception:
                with _safety.swallow_errors(f"log processor {type(processor).__name__}"):
                    raise


def _register_buffer_metrics(meter: Any, buffer: ExportBuffer) -> None:
    """``obskit.telemetry.exported``/``dropped``/``buffered`` and the buffer's memory, read from its accounting."""
    from opentelemetry.metrics import Observation

    def exported(_options: Any) -> Any:
        for signal, stats in buffer.stats().items():
            yield Observation(stats.exported, {sc.ATTR_OBSKIT_SIGNAL: signal})

    def dropped(_options: Any) -> Any:
        for signal, stats in buffer.stats().items():
            for reason, count in stats.dropped.items():
                if count:
                    yield Observation(count, {sc.ATTR_OBSKIT_SIGNAL: signal, sc.ATTR_OBSKIT_REASON: reason})

    def buffered(_options: Any) -> Any:
        for signal, stats in buffer.stats().items():
            yield Observation(stats.buffered, {sc.ATTR_OBSKIT_SIGNAL: signal})

    def usage(_options: Any) -> Any:
        yield Observation(buffer.used_bytes)

    meter.create_observable_counter(
        sc.TELEMETRY_EXPORTED,
        callbacks=[exported],
        unit=sc.UNIT_ITEM,
        description="Telemetry items (spans, metric points, log records) the collector accepted.",
    )
    meter.create_observable_counter(
        sc.TELEMETRY_DROPPED,
        callbacks=[dropped],
        unit=sc.UNIT_ITEM,
        description="Telemetry items dropped, by reason; produced = exported + dropped + buffered.",
    )
    meter.create_observable_up_down_counter(
        sc.TELEMETRY_BUFFERED,
        callbacks=[buffered],
        unit=sc.UNIT_ITEM,
        description="Telemetry items waiting for export (SDK queues and the export buffer).",
    )
    meter.create_observable_gauge(
        sc.EXPORT_BUFFER_USAGE,
        callbacks=[usage],
        unit="By",
        description="Bytes held by the export buffer, bounded by OBSKIT_EXPORT_BUFFER_BYTES.",
    )


def _system_metrics_after_fork(instrumentor: Any) -> None:
    # contrib's SystemMetricsInstrumentor holds a psutil.Process of the pid that instrumented it: after a
    # pre-fork, every worker would report the master's memory and CPU.
    if instrumentor is not None and hasattr(instrumentor, "_proc"):
        import psutil

        instrumentor._proc = psutil.Process(os.getpid())


def _internal_errors_callback(_options: Any) -> Any:
    from opentelemetry.metrics import Observation

    yield Observation(_safety.internal_error_count())


def _start_system_metrics(meter_provider: Any) -> Any:
    try:
        from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
    except ImportError:  # pragma: no cover - a dependency of obskit; kept for broken installs
        return None
    instrumentor = SystemMetricsInstrumentor(config=dict(_PROCESS_METRICS))
    instrumentor.instrument(meter_provider=meter_provider)
    return instrumentor


def _set_globals(tracer_provider: Any, meter_provider: Any, logger_provider: Any, propagator: Any) -> None:
    from opentelemetry._logs import set_logger_provider

    trace.set_tracer_provider(tracer_provider)
    metrics_api.set_meter_provider(meter_provider)
    if logger_provider is not None:
        set_logger_provider(logger_provider)
    propagate.set_global_textmap(propagator)


def _install_process_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child, after_in_parent=_after_fork_in_parent)


# A gunicorn master (with --preload) exits only after its workers, each of which had the whole
# OBSKIT_SHUTDOWN_TIMEOUT for its own flush. The master starts its own shutdown when the signal arrives (below), in
# parallel with theirs; at exit it waits for that at most this long, so stopping a server takes one deadline.
_MASTER_EXIT_BUDGET = 1.0
_master_hooked = False


def _at_exit() -> None:
    handle = _handle
    if handle is not None and handle.enabled:
        timeout = min(handle.settings.shutdown_timeout, _MASTER_EXIT_BUDGET) if _master_hooked else None
        with _sigterm_deferred():
            handle.shutdown(timeout)


@contextlib.contextmanager
def _sigterm_deferred() -> Iterator[None]:
    """Keep a SIGTERM from killing the process in the middle of its final, deadline-bounded flush.

    A worker leaving on its own (gunicorn --max-requests) runs this flush at exit; if its master is stopped at that
    moment it sends the worker SIGTERM, whose default action (uvicorn restores it after serving) would drop the
    last batch. The process is exiting anyway and the flush is bounded by OBSKIT_SHUTDOWN_TIMEOUT; SIGKILL still
    works. Outside the main thread nothing is changed.
    """
    import signal

    try:
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except (ValueError, OSError):  # not the main thread, or no signals here
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signal.SIGTERM, previous)


def _after_fork_in_parent() -> None:
    if not _master_hooked:
        with _safety.swallow_errors("fork"):
            _hook_gunicorn_master()


def _hook_gunicorn_master() -> None:
    """In a gunicorn master, start obskit's own shutdown as soon as SIGTERM/SIGINT arrives.

    The master exits only after its workers (each with its own deadline); starting its own flush in parallel
    with theirs, instead of at its exit, keeps a server's stop to one deadline. Only gunicorn's Arbiter handler is
    chained: another forking application may keep running for a while after SIGTERM.
    """
    global _master_hooked
    if threading.current_thread() is not threading.main_thread():
        return
    import signal

    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if type(getattr(previous, "__self__", None)).__module__ != "gunicorn.arbiter":
            continue

        def on_stop(number: int, frame: Any, previous: Any = previous) -> Any:
            handle = _handle
            if handle is not None and handle.enabled:
                threading.Thread(target=handle.shutdown, name="obskit-master-shutdown", daemon=True).start()
            return previous(number, frame)

        signal.signal(signum, on_stop)
        _master_hooked = True


def _after_fork_in_child() -> None:
    # gunicorn --preload forks workers from a master that ran init(): each worker needs its own identity. The
    # SDK's batch processors and periodic reader restart their threads and drop the master's queue themselves.
    global _master_hooked
    _master_hooked = False  # the worker has its own signal handling, and its own full deadline
    handle = _handle
    if handle is None or handle.resource is None:
        return
    with _safety.swallow_errors("fork"):
        _resource.refresh_after_fork(handle._providers())
        for callback in handle._on_fork:
            callback()
        if handle.settings.metrics_exporter == "prometheus":
            _safety.log_once(
                "prometheus-fork",
                "OTEL_METRICS_EXPORTER=prometheus does not work in forked workers (pid %s): the pull endpoint "
                "belongs to the master; use OTLP with several workers (docs/deployment.md)",
                os.getpid(),
            )


def shutdown(timeout: float | None = None) -> bool:
    """Flush and close what ``init()`` installed, within ``timeout`` seconds (default OBSKIT_SHUTDOWN_TIMEOUT).

    Returns:
        True when everything was flushed within the deadline; also True when obskit was never initialised.
    """
    handle = _handle
    if handle is None or not handle.enabled:
        return True
    return handle.shutdown(timeout)


def force_flush(timeout: float | None = None) -> bool:
    """Export everything recorded so far, waiting at most ``timeout`` seconds.

    Returns:
        True when every signal was flushed in time; also True when obskit was never initialised.
    """
    handle = _handle
    if handle is None or not handle.enabled:
        return True
    return handle.force_flush(timeout)


def current_handle() -> Handle | None:
    return _handle


def _reset() -> None:
    """Shut down and forget the current configuration, so a test can ``init()`` again (tests only).

    OpenTelemetry's globals can be set once per process; tests reset the set-once guards the way OTel's own
    test utilities do, so every test gets fresh providers.
    """
    global _handle
    with _init_lock:
        handle, _handle = _handle, None
        if handle is not None and handle.enabled:
            handle.shutdown(timeout=5.0)
        _logging.uninstall_record_factory()
        _integrations.unconfigure()
        _stages.unbind()
        _guard.install(None)
        _reset_otel_globals()


def _reset_otel_globals() -> None:
    from opentelemetry import _logs
    from opentelemetry._logs import _internal as logs_internal
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.util._once import Once

    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    metrics_internal._PROXY_METER_PROVIDER = metrics_internal._ProxyMeterProvider()
    logs_internal._LOGGER_PROVIDER_SET_ONCE = Once()
    logs_internal._LOGGER_PROVIDER = None
    del _logs


def init_capture(capture: Any, **kwargs: Any) -> Handle:
    """Replace any current configuration with one that records into ``capture``'s in-memory exporters."""
    global _handle
    with _init_lock:
        _reset()
        settings = load_settings(os.environ, **kwargs)
        _handle = _build(settings, kwargs, capture=capture)
        return _handle
