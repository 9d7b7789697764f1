"""Stage decorators: a span and the ``obskit.model.*`` metrics around each model stage call.

The decorators are applied at import time, usually before ``obskit.init()``. They read one module-level
binding (:func:`bind`, called by ``init()``) on every call; while it is unset a decorated call only calls
through. Everything that can be computed once per decorated function (span name, attribute dicts) is
cached on a per-function :class:`_Site` and recomputed only when the binding changes.

Only the OpenTelemetry API is used here; the SDK stays in ``_setup``/``_exporters``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import operator
import reprlib
import sys
from collections.abc import AsyncGenerator, Callable, Generator, Iterator, Mapping
from contextvars import ContextVar, Token
from time import perf_counter_ns, time_ns
from types import CodeType, MappingProxyType
from typing import Any, Final, ParamSpec, Protocol, TypeVar, cast, overload

import wrapt
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation import _SPAN_KEY

from . import _aggregate, _safety, _semconv
from ._context import SPAN_ID, TRACE_FLAGS, TRACE_ID, attach_context, current_context, detach_context, with_span

__all__ = ["bind", "current_registry", "inference", "postprocess", "preprocess", "set_batch_size", "stage", "unbind"]

P = ParamSpec("P")
R = TypeVar("R")
LabelFilter = Callable[[str, Mapping[str, str]], tuple[Mapping[str, object], bool]]
"""The cardinality guard: an instrument's guarded attributes, and whether they may be reused for the same attributes
(False when the guard counted an overflow: SPEC §4 counts one per measurement, so it must run again at the next)."""


class StageSpans(Protocol):
    """A site's spans made without the tracer's ``start_span`` (see ``_stagespan``)."""

    def start(self) -> Span | None:
        """A span started now as a child of the current span, or None: then ``start_span`` it is."""


StageSpansFactory = Callable[[Tracer, str, Mapping[str, Any]], "StageSpans | None"]
BatchSize = int | Callable[..., int]
"""A fixed batch size, or a callable over the call's arguments returning it."""

_INTERNAL: Final = SpanKind.INTERNAL
_BATCH: Final = _semconv.ATTR_MODEL_BATCH_SIZE
_ERROR: Final = StatusCode.ERROR
# The largest batch size: OTLP encodes ints as int64, and one larger value would fail every later metrics export.
_MAX_BATCH: Final = 2**63 - 1
# Error-attribute dicts are cached per exception type; past this many types they are built per call.
_MAX_ERROR_TYPES: Final = 32


class _Binding:
    """Everything a decorated call needs from ``init()``: one object, swapped atomically."""

    __slots__ = (
        "batch_size",
        "duration",
        "label_filter",
        "model_name",
        "model_version",
        "registry",
        "resolved",
        "stage_spans",
        "tracer",
        "ttfo",
    )

    def __init__(
        self,
        tracer: Tracer | None,
        meter: Meter,
        model_name: str | None,
        model_version: str | None,
        label_filter: LabelFilter | None,
        registry: _aggregate.Registry | None,
        stage_spans: StageSpansFactory | None = None,
    ) -> None:
        self.tracer = tracer
        self.stage_spans = stage_spans
        self.model_name = model_name or None
        self.model_version = model_version or None
        self.label_filter = label_filter
        # Every site resolved under this binding, for the obskit.model.active callback.
        self.resolved: list[_Resolved] = []
        # The histograms are obskit's own (see _aggregate: an SDK record re-hashes fixed attributes every call);
        # init() makes every metric reader collect them.
        self.registry = registry or _aggregate.Registry()
        self.duration = self.registry.histogram(
            _semconv.MODEL_DURATION,
            unit=_semconv.UNIT_SECONDS,
            description="Duration of model stage calls (pre-processing, inference, post-processing).",
            bounds=_semconv.MODEL_DURATION_BUCKETS,
        )
        # An observable up-down counter over in-process counts: a synchronous add(+1)/add(-1) pair costs two
        # full SDK measurements per call (a third of a stage call's cost, measured in bench_stage.py), while the
        # exported series (a non-monotonic cumulative sum per attribute set) is the same.
        meter.create_observable_up_down_counter(
            _semconv.MODEL_ACTIVE,
            callbacks=[_observe_active],
            unit=_semconv.UNIT_CALL,
            description="Model stage calls in progress.",
        )
        self.batch_size = self.registry.histogram(
            _semconv.MODEL_BATCH_SIZE,
            unit=_semconv.UNIT_ITEM,
            description="Number of items per model stage call.",
            bounds=_semconv.BATCH_SIZE_BUCKETS,
        )
        self.ttfo = self.registry.histogram(
            _semconv.MODEL_TIME_TO_FIRST_OUTPUT,
            unit=_semconv.UNIT_SECONDS,
            description="Time from the call of a streaming model stage to its first output.",
            bounds=_semconv.MODEL_DURATION_BUCKETS,
        )

    def series(self, histogram: _aggregate.Histogram, attrs: Mapping[str, str]) -> tuple[_aggregate.Series, bool]:
        """The series of ``attrs`` after the cardinality guard, and whether it may be reused (see ``LabelFilter``)."""
        guarded: Mapping[str, object] = attrs
        reusable = True
        if self.label_filter is not None:
            try:
                guarded, reusable = self.label_filter(histogram.name, attrs)
            except Exception as exc:
                # A bug in the guard must not cost the span: stage attributes come from decorator arguments,
                # so keeping them unfiltered cannot explode.
                _internal_error("stage label filter", exc)
        return histogram.series(guarded), reusable


class _Recorder(Protocol):
    def record(self, value: float, trace_id: int = 0, span_id: int = 0) -> None: ...


class _Pending:
    """A site's series before its first measurement, or for good when the guard replaced a value in it.

    Resolved at the first record, not with the site: an instrument a site never records into (batch size unknown,
    time to first output of a non-streaming stage) then counts no overflow. Once the guard accepted the attributes
    ``store`` puts the series in its place, so later calls record straight into it; while the guard replaces a value
    (``_OTHER``) every measurement passes the guard again and counts its overflow, as the HTTP metrics do.
    """

    __slots__ = ("attrs", "binding", "histogram", "store")

    def __init__(
        self,
        binding: _Binding,
        histogram: _aggregate.Histogram,
        attrs: Mapping[str, str],
        store: Callable[[_aggregate.Series], object] | None,
    ) -> None:
        self.binding = binding
        self.histogram = histogram
        self.attrs = attrs
        self.store = store

    def record(self, value: float, trace_id: int = 0, span_id: int = 0) -> None:
        series, reusable = self.binding.series(self.histogram, self.attrs)
        if reusable and self.store is not None:
            self.store(series)
        series.record(value, trace_id, span_id)


def _observe_active(_options: CallbackOptions) -> Iterator[Observation]:
    """Current in-progress calls per attribute set, under the current binding.

    Reads the module's binding rather than the one that created the instrument: re-binding on the same meter
    gets the SDK's existing instrument back, with this callback.
    """
    binding = _binding
    if binding is None:
        return
    totals: dict[tuple[tuple[str, str], ...], tuple[int, Mapping[str, str]]] = {}
    for resolved in list(binding.resolved):
        key = tuple(sorted(resolved.attrs.items()))
        previous = totals.get(key, (0, resolved.attrs))[0]
        totals[key] = (previous + resolved.in_progress(), resolved.attrs)
    for value, attrs in totals.values():
        yield Observation(value, attrs)


# The one global every decorated call reads; None means "not initialised": call straight through.
_binding: _Binding | None = None


def bind(
    tracer: Tracer,
    meter: Meter,
    *,
    model_name: str | None,
    model_version: str | None,
    traces_enabled: bool = True,
    label_filter: LabelFilter | None = None,
    registry: _aggregate.Registry | None = None,
    stage_spans: StageSpansFactory | None = None,
) -> None:
    """Route decorated calls to ``tracer``/``meter`` (called by ``obskit.init()``).

    ``model_name``/``model_version`` are the defaults for decorators that give none
    (``OBSKIT_MODEL_NAME``/``OBSKIT_MODEL_VERSION``). With ``traces_enabled=False`` no span is created.
    The stage histograms live in ``registry`` (a new one if not given; see :func:`current_registry`);
    ``label_filter`` (the cardinality guard) is applied to each site's attributes when its series is created.
    ``stage_spans(tracer, span_name, attributes)`` (obskit's SDK setup) may give a site cheaper spans.
    """
    global _binding
    _binding = _Binding(
        tracer if traces_enabled else None, meter, model_name, model_version, label_filter, registry, stage_spans
    )


def current_registry() -> _aggregate.Registry | None:
    """The stage histograms of the current binding, for the metric readers to collect."""
    binding = _binding
    return None if binding is None else binding.registry


def unbind() -> None:
    """Make decorated calls plain calls again (called by ``obskit.shutdown()``)."""
    global _binding
    _binding = None


class _Resolved:
    """A site's names and attribute dicts under one binding."""

    __slots__ = (
        "attrs",
        "batch_series",
        "binding",
        "duration_series",
        "ended",
        "error_series",
        "span_attrs",
        "span_name",
        "stage_spans",
        "started",
        "ttfo_series",
    )

    def __init__(self, site: _Site, binding: _Binding) -> None:
        # Calls started and ended: next() on an itertools.count is one C call, atomic under the GIL, where a
        # lock-protected "active += 1" and "-= 1" cost a quarter of a metrics-only stage call (bench_stage.py).
        self.started = itertools.count()
        self.ended = itertools.count()
        name = site.model or binding.model_name or site.func_name
        version = site.version or binding.model_version or _semconv.UNKNOWN_VERSION
        attrs = {
            _semconv.ATTR_MODEL_NAME: name,
            _semconv.ATTR_MODEL_VERSION: version,
            _semconv.ATTR_MODEL_STAGE: site.stage,
        }
        self.binding = binding
        # Read-only views: the same dicts are handed to the SDK on every call.
        self.attrs: Mapping[str, str] = MappingProxyType(attrs)
        static = site.static_batch
        self.span_attrs: Mapping[str, str | int] = (
            self.attrs if static is None else MappingProxyType({**attrs, _semconv.ATTR_MODEL_BATCH_SIZE: static})
        )
        self.span_name = f"{site.stage} {name}"
        self.stage_spans: StageSpans | None = None
        if binding.stage_spans is not None and binding.tracer is not None:
            try:
                self.stage_spans = binding.stage_spans(binding.tracer, self.span_name, self.span_attrs)
            except Exception as exc:
                _internal_error("stage spans", exc)
        # Each _Pending puts the series in its own place once the guard accepted it (see _Pending).
        self.duration_series: _Recorder = _Pending(
            binding, binding.duration, attrs, functools.partial(setattr, self, "duration_series")
        )
        self.batch_series: _Recorder = _Pending(
            binding, binding.batch_size, attrs, functools.partial(setattr, self, "batch_series")
        )
        self.ttfo_series: _Recorder = _Pending(
            binding, binding.ttfo, attrs, functools.partial(setattr, self, "ttfo_series")
        )
        self.error_series: dict[type[BaseException], _Recorder] = {}
        binding.resolved.append(self)

    def in_progress(self) -> int:
        """Calls started and not yet ended (read ended first: never negative, at worst one instant late)."""
        ended = _aggregate.count_value(self.ended)
        return _aggregate.count_value(self.started) - ended

    def series_for_error(self, exc_type: type[BaseException]) -> _Recorder:
        series = self.error_series.get(exc_type)
        if series is None:
            cached = len(self.error_series) < _MAX_ERROR_TYPES
            qualname = exc_type.__qualname__ if cached else _semconv.OTHER
            attrs = {**self.attrs, _semconv.ATTR_ERROR_TYPE: qualname}
            store = functools.partial(self.error_series.__setitem__, exc_type) if cached else None
            series = _Pending(self.binding, self.binding.duration, attrs, store)
            if cached:
                self.error_series[exc_type] = series
        return series


class _Site:
    """Per decorated function: what the decorator was given, plus the cached :class:`_Resolved`."""

    __slots__ = ("batch_fn", "func_name", "lean", "model", "resolved", "stage", "static_batch", "version")

    def __init__(
        self, stage: str, model: str | None, version: str | None, batch_size: BatchSize | None, func_name: str
    ) -> None:
        self.stage = stage
        self.model = model
        self.version = version
        self.func_name = func_name
        self.static_batch = batch_size if isinstance(batch_size, int) else None
        self.batch_fn = None if batch_size is None or isinstance(batch_size, int) else batch_size
        self.resolved: _Resolved | None = None
        # The resolved site when its calls take the metrics-only path of a plain function (_plain_sync): no
        # tracer in its binding. Read with a check of its binding, like ``resolved``.
        self.lean: _Resolved | None = None

    def resolve(self, binding: _Binding) -> _Resolved:
        resolved = self.resolved
        if resolved is None or resolved.binding is not binding:
            # One attribute store: a concurrent reader sees the old or the new object, never a mix.
            resolved = self.resolved = _Resolved(self, binding)
            self.lean = resolved if binding.tracer is None else None
        return resolved


class _Call:
    """State of one decorated call; also the slot :func:`set_batch_size` writes to."""

    __slots__ = ("batch", "ctx", "resolved", "span", "t0")

    batch: int | None
    ctx: Context | None
    resolved: _Resolved
    span: Span | None
    t0: int


# The innermost async or streaming decorated call running in this context, for set_batch_size() from tasks and
# threads it starts (asyncio.to_thread copies the context).
_current_call: ContextVar[_Call | None] = ContextVar("obskit_stage_call", default=None)
# The code of every wrapper frame whose local ``call`` is a running decorated call. set_batch_size() finds the
# innermost one on the caller's stack: a plain function's call is not put in the context variable (its set() and
# reset() cost 0.16 µs, a tenth of a metrics-only call, for a function most stages never call).
_call_codes: set[CodeType] = set()


def _internal_error(where: str, exc: Exception) -> None:
    """Count (and, under our test suite, re-raise) a failure of obskit's own code."""
    with _safety.swallow_errors(where):
        raise exc


def _as_batch(value: object) -> int | None:
    """A batch size as an int from 0 to ``_MAX_BATCH``, or None (logged once) for anything else."""
    # "not value >> 63" is "0 <= value <= _MAX_BATCH" in as many bytecodes as "value >= 0" (per call: batch_size=len).
    if type(value) is int and not value >> 63:
        return value
    if not isinstance(value, bool):
        try:
            n = operator.index(value)  # type: ignore[arg-type]  # numpy integers and friends
        except Exception:  # not an integer (TypeError), or an __index__ that fails: invalid like any other value
            pass
        else:
            if not n >> 63:
                return n
    _safety.log_once(
        "stages.batch_size",
        "obskit: ignoring batch size %r: expected a non-negative int below 2**63",
        _Shown(value),
    )
    return None


class _Shown:
    """A value in a log message: a bounded repr, made only if the message is logged, that never raises."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __repr__(self) -> str:
        try:
            return _REPR.repr(self.value)
        except Exception:  # a failing __repr__, an int too long for repr()
            return f"<{type(self.value).__qualname__}>"


_REPR: Final = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80


def _batch_of(batch_fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """The decorator's ``batch_size`` callable applied to the call's arguments; None if it fails (counted)."""
    try:
        return _as_batch(batch_fn(*args, **kwargs))
    except Exception as exc:
        _internal_error("stage batch_size callable", exc)
        return None


def _open(
    site: _Site,
    binding: _Binding,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    parent: Context | None = None,
    start_time: int | None = None,
    t0: int | None = None,
) -> _Call | None:
    """Start the span and count the call as active; None if obskit's own code failed."""
    call = _Call()
    call.span = None
    try:
        resolved = site.resolved
        if resolved is None or resolved.binding is not binding:
            resolved = site.resolve(binding)
        call.resolved = resolved
        call.batch = site.static_batch
        if site.batch_fn is not None:
            call.batch = _batch_of(site.batch_fn, args, kwargs)
        tracer = binding.tracer
        if tracer is None:
            call.ctx = parent
        else:
            fast = resolved.stage_spans if parent is None and start_time is None else None
            span = fast.start() if fast is not None else None
            if span is None:
                span = tracer.start_span(
                    resolved.span_name, parent, _INTERNAL, resolved.span_attrs, start_time=start_time
                )
            call.span = span
            call.ctx = with_span(span, parent)
        next(resolved.started)
        call.t0 = perf_counter_ns() if t0 is None else t0
    except Exception as exc:
        if call.span is not None:
            call.span.end()
        _internal_error("stage start", exc)
        return None
    return call


def _close(
    call: _Call,
    exc: BaseException | None,
    call_token: Token[_Call | None] | None = None,
    ctx_token: object | None = None,
) -> None:
    """Restore the context, record duration, batch size and outcome, end the span. Never raises (but in tests).

    ``_sync_runner``'s ``run`` repeats the no-error case inline (a call fewer per stage): keep the two in step.
    """
    elapsed = (perf_counter_ns() - call.t0) / 1e9
    if call_token is not None:  # _exit() inlined
        try:
            _current_call.reset(call_token)
        except Exception as internal:
            _internal_error("stage exit", internal)
    if ctx_token is not None:
        detach_context(ctx_token)
    resolved = call.resolved
    batch = call.batch
    # Like the OpenTelemetry API's use_span: only Exception is an error; GeneratorExit,
    # KeyboardInterrupt, SystemExit and asyncio.CancelledError end the call without one.
    error = exc if isinstance(exc, Exception) else None
    # Three independent blocks (try is free on 3.11+): a failing instrument must not leave the
    # span open or the call counted as active forever.
    span = call.span
    try:
        trace_id = span_id = 0
        if span is not None:
            span_context = span.get_span_context()
            if span_context[TRACE_FLAGS] & 1:  # sampled: exemplars follow the SDK's default trace_based filter
                trace_id, span_id = span_context[TRACE_ID], span_context[SPAN_ID]
        series = resolved.duration_series if error is None else resolved.series_for_error(type(error))
        series.record(elapsed, trace_id, span_id)
        if batch is not None:
            resolved.batch_series.record(batch, trace_id, span_id)
    except Exception as internal:
        _internal_error("stage end metrics", internal)
    next(resolved.ended)
    if span is None:
        return
    try:
        if error is not None:
            qualname = type(error).__qualname__
            span.set_attribute(_semconv.ATTR_ERROR_TYPE, qualname)
            span.record_exception(error)
            span.set_status(Status(_ERROR, f"{qualname}: {error}"))
        if batch is not None and batch != resolved.span_attrs.get(_BATCH):
            span.set_attribute(_BATCH, batch)
    except Exception as internal:
        _internal_error("stage end span", internal)
    try:
        span.end()
    except Exception as internal:
        _internal_error("stage end span", internal)


def _enter(call: _Call) -> tuple[Token[_Call | None], object | None]:
    """Make the call current for set_batch_size(), and its span current (for a whole call or a stream's step)."""
    return _current_call.set(call), (None if call.span is None else attach_context(call.ctx))  # type: ignore[arg-type]


def _exit(call_token: Token[_Call | None], ctx_token: object | None) -> None:
    try:
        _current_call.reset(call_token)
    except Exception as exc:  # a token from another context: only if a stream moved between contexts mid-step
        _internal_error("stage exit", exc)
    if ctx_token is not None:
        detach_context(ctx_token)


def _first_output(call: _Call) -> None:
    try:
        span = call.span
        trace_id = span_id = 0
        if span is not None and (span_context := span.get_span_context())[TRACE_FLAGS] & 1:
            trace_id, span_id = span_context[TRACE_ID], span_context[SPAN_ID]
        call.resolved.ttfo_series.record((perf_counter_ns() - call.t0) / 1e9, trace_id, span_id)
    except Exception as exc:
        _internal_error("stage first output", exc)


_Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


_Runner = Callable[[_Binding, Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]


def _sync_runner(site: _Site) -> _Runner:
    def run(binding: _Binding, wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        resolved = site.resolved
        if resolved is None or resolved.binding is not binding:
            return _first_call(site, binding, wrapped, args, kwargs)
        # The site is resolved: _open() inlined, and _close() too when traced without an error (the path
        # bench_stage.py measures against stock OpenTelemetry: function frames are a fifth of it).
        call = _Call()
        call.span = None
        call.resolved = resolved
        call.batch = site.static_batch
        if site.batch_fn is not None:
            call.batch = _batch_of(site.batch_fn, args, kwargs)
        tracer = binding.tracer
        ctx_token = None
        if tracer is not None:
            try:
                fast = resolved.stage_spans
                span = fast.start() if fast is not None else None
                if span is None:
                    span = tracer.start_span(resolved.span_name, None, _INTERNAL, resolved.span_attrs)
                call.span = span
                # attach_context(with_span(span)), a call shallower
                ctx_token = attach_context(Context({**current_context(), _SPAN_KEY: span}))
            except Exception as exc:
                if call.span is not None:
                    call.span.end()
                _internal_error("stage start", exc)
                return wrapped(*args, **kwargs)
        next(resolved.started)
        call.t0 = t0 = perf_counter_ns()
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            _close(call, exc, None, ctx_token)
            raise  # the caller's exception, same object, traceback untouched
        if ctx_token is None:  # metrics only: a method's call (a plain function's takes _plain_sync's path)
            _close(call, None, None, None)
            return result
        elapsed = (perf_counter_ns() - t0) / 1e9
        size = call.batch
        # Traced, no error: _close() inlined (three independent blocks, as there).
        detach_context(ctx_token)
        ended: Any = call.span  # set with ctx_token
        try:
            trace_id = span_id = 0
            span_context = ended.get_span_context()
            if span_context[TRACE_FLAGS] & 1:  # sampled: exemplars follow the SDK's default trace_based filter
                trace_id, span_id = span_context[TRACE_ID], span_context[SPAN_ID]
            resolved.duration_series.record(elapsed, trace_id, span_id)
            if size is not None:
                resolved.batch_series.record(size, trace_id, span_id)
        except Exception as internal:
            _internal_error("stage end metrics", internal)
        next(resolved.ended)
        if size is not None and size != resolved.span_attrs.get(_BATCH):
            try:
                ended.set_attribute(_BATCH, size)
            except Exception as internal:
                _internal_error("stage end span", internal)
        try:
            ended.end()
        except Exception as internal:
            _internal_error("stage end span", internal)
        return result

    _call_codes.add(run.__code__)
    return run


def _first_call(
    site: _Site, binding: _Binding, wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """A call through _open()/_close(): the site's first under this binding (it resolves the site)."""
    call = _open(site, binding, args, kwargs)
    if call is None:
        return wrapped(*args, **kwargs)
    ctx_token = None if call.span is None else attach_context(call.ctx)  # type: ignore[arg-type]
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        _close(call, exc, None, ctx_token)
        raise
    _close(call, None, None, ctx_token)
    return result


_call_codes.add(_first_call.__code__)


def _sync_wrapper(site: _Site) -> _Wrapper:
    run = _sync_runner(site)

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        binding = _binding
        if binding is None:
            return wrapped(*args, **kwargs)
        return run(binding, wrapped, args, kwargs)

    return wrapper


def _plain_sync(site: _Site, func: Callable[..., Any]) -> Callable[..., Any]:
    """A closure instead of a ``wrapt.FunctionWrapper``, for a plain function.

    wrapt's call path alone costs 0.65 µs per call here (bench_stage.py: 0.68 µs against 0.04 µs bare), a closure
    0.14 µs. Methods keep wrapt, which hands the wrapper the arguments without ``self`` (what a ``batch_size``
    callable expects).

    A metrics-only call of a resolved site runs here, in this one frame: ``_open()`` and ``_close()`` inlined for
    that case (keep it in step with them), a third fewer bytecodes and a frame less than through ``run``. It is
    three calls of every metrics-only request of the benchmark apps (issue 8: Flask's 0.95x target).
    """
    run = _sync_runner(site)

    def stage_call(*args: Any, **kwargs: Any) -> Any:
        binding = _binding
        if binding is None:
            return func(*args, **kwargs)
        resolved = site.lean
        if resolved is None or resolved.binding is not binding:
            return run(binding, func, args, kwargs)
        call = _Call()  # the slot set_batch_size() writes to (this frame's code is in _call_codes)
        call.batch = site.static_batch
        if site.batch_fn is not None:
            call.batch = _batch_of(site.batch_fn, args, kwargs)
        next(resolved.started)
        t0 = perf_counter_ns()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            call.span = None
            call.resolved = resolved
            call.t0 = t0
            _close(call, exc, None, None)
            raise  # the caller's exception, same object, traceback untouched
        elapsed = (perf_counter_ns() - t0) / 1e9
        size = call.batch
        try:
            resolved.duration_series.record(elapsed)
            if size is not None:
                resolved.batch_series.record(size)
        except Exception as internal:
            _internal_error("stage end metrics", internal)
        next(resolved.ended)
        return result

    _call_codes.add(stage_call.__code__)
    return functools.update_wrapper(stage_call, func)


def _is_plain_function(target: object) -> bool:
    """A function defined at module level or inside a function, not in a class body (then it's a method)."""
    if not inspect.isfunction(target):
        return False
    parts = target.__qualname__.split(".")
    return len(parts) == 1 or parts[-2] == "<locals>"


def _async_wrapper(site: _Site) -> _Wrapper:
    async def run(binding: _Binding, wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # Opened when awaited, not when called: the span covers the awaited execution.
        call = _open(site, binding, args, kwargs)
        if call is None:
            return await wrapped(*args, **kwargs)
        call_token, ctx_token = _enter(call)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            _close(call, exc, call_token, ctx_token)
            raise
        _close(call, None, call_token, ctx_token)
        return result

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        binding = _binding
        if binding is None:
            return wrapped(*args, **kwargs)
        return run(binding, wrapped, args, kwargs)

    _call_codes.add(run.__code__)
    return wrapper


def _call_time(binding: _Binding) -> tuple[Context, int | None, int]:
    """Parent context, wall-clock and monotonic time at the call of a streaming stage."""
    return current_context(), (time_ns() if binding.tracer is not None else None), perf_counter_ns()


def _gen_wrapper(site: _Site) -> _Wrapper:
    def drive(
        binding: _Binding,
        gen: Generator[Any, Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        called: tuple[Context, int | None, int],
    ) -> Generator[Any, Any, Any]:
        # Runs from the first next(): a stream that is never iterated records nothing. The span's
        # start, the duration and time to first output are still measured from the call.
        call = _open(site, binding, args, kwargs, *called)
        if call is None:
            return (yield from gen)
        first = True
        to_send: Any = None
        to_throw: BaseException | None = None
        try:
            while True:
                # The span is current only while the user's code runs, never while the consumer does.
                tokens = _enter(call)
                try:
                    if to_throw is None:
                        item = gen.send(to_send)
                    else:
                        item = gen.throw(to_throw)
                        to_throw = None
                except StopIteration as stop:
                    result = stop.value
                    break
                finally:
                    _exit(*tokens)
                if first:
                    first = False
                    _first_output(call)
                try:
                    to_send = yield item
                except GeneratorExit:
                    # Closed early by the consumer (or garbage-collected): close the user's generator too.
                    tokens = _enter(call)
                    try:
                        gen.close()
                    finally:
                        _exit(*tokens)
                    raise
                except BaseException as thrown:
                    to_throw, to_send = thrown, None
        except BaseException as exc:
            _close(call, exc)
            raise
        _close(call, None)
        return result

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        binding = _binding
        if binding is None:
            return wrapped(*args, **kwargs)
        gen = wrapped(*args, **kwargs)  # creating a generator runs none of its code
        try:
            called = _call_time(binding)
        except Exception as exc:
            _internal_error("stage call time", exc)
            return gen
        return drive(binding, gen, args, kwargs, called)

    _call_codes.add(drive.__code__)
    return wrapper


def _async_gen_wrapper(site: _Site) -> _Wrapper:
    async def drive(
        binding: _Binding,
        agen: AsyncGenerator[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        called: tuple[Context, int | None, int],
    ) -> AsyncGenerator[Any, Any]:
        call = _open(site, binding, args, kwargs, *called)
        if call is None:
            async for item in agen:
                yield item
            return
        first = True
        to_send: Any = None
        to_throw: BaseException | None = None
        try:
            while True:
                tokens = _enter(call)
                try:
                    if to_throw is None:
                        item = await agen.asend(to_send)
                    else:
                        item = await agen.athrow(to_throw)
                        to_throw = None
                except StopAsyncIteration:
                    break
                finally:
                    _exit(*tokens)
                if first:
                    first = False
                    _first_output(call)
                try:
                    to_send = yield item
                except GeneratorExit:
                    tokens = _enter(call)
                    try:
                        await agen.aclose()
                    finally:
                        _exit(*tokens)
                    raise
                except BaseException as thrown:
                    to_throw, to_send = thrown, None
        except BaseException as exc:
            _close(call, exc)
            raise
        _close(call, None)

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        binding = _binding
        if binding is None:
            return wrapped(*args, **kwargs)
        agen = wrapped(*args, **kwargs)
        try:
            called = _call_time(binding)
        except Exception as exc:
            _internal_error("stage call time", exc)
            return agen
        return drive(binding, agen, args, kwargs, called)

    _call_codes.add(drive.__code__)
    return wrapper


@contextlib.contextmanager
def _cm_probe() -> Generator[None, None, None]:
    yield


@contextlib.asynccontextmanager
async def _acm_probe() -> AsyncGenerator[None, None]:
    yield


# Every @contextmanager / @asynccontextmanager function shares its helper's code object.
_CONTEXT_MANAGER_CODES: Final = frozenset({_cm_probe.__code__, _acm_probe.__code__})


def _spelled(stage: str) -> str:
    """How the user wrote the decorator, for messages."""
    if stage in (_semconv.STAGE_PREPROCESS, _semconv.STAGE_INFERENCE, _semconv.STAGE_POSTPROCESS):
        return f"@obskit.{stage}"
    return f"@obskit.stage({stage!r})"


def _check_stage_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"{what} must be a non-empty string, got {name!r}")


def _decorate(
    func: Callable[P, R], stage: str, model: str | None, version: str | None, batch_size: object, stacklevel: int
) -> Any:
    """Wrap ``func`` (a function, method, classmethod/staticmethod object, coroutine or generator function)."""
    # A classmethod/staticmethod object when the decorator sits above @classmethod/@staticmethod.
    target = getattr(func, "__func__", func)
    if not callable(target):
        raise TypeError(f"{_spelled(stage)} must decorate a callable, got {func!r}")
    func_name = getattr(target, "__name__", None) or type(target).__name__
    site = _Site(stage, model, version, cast("BatchSize | None", batch_size), func_name)
    if inspect.isasyncgenfunction(target):
        wrapper = _async_gen_wrapper(site)
    elif inspect.iscoroutinefunction(target) or _async_underneath(target):
        wrapper = _async_wrapper(site)
    elif inspect.isgeneratorfunction(target):
        wrapper = _gen_wrapper(site)
    else:
        inner = getattr(target, "__wrapped__", None)
        if getattr(target, "__code__", None) in _CONTEXT_MANAGER_CODES or (
            inner is not None and (inspect.isgeneratorfunction(inner) or inspect.isasyncgenfunction(inner))
        ):
            qualname = getattr(target, "__qualname__", func_name)
            # stacklevel counts warn_once -> _decorate -> the public entry point(s) -> the user's decorator line.
            _safety.warn_once(
                f"stages.contextmanager:{getattr(target, '__module__', '')}.{qualname}",
                f"{_spelled(stage)} on {qualname}(), which wraps a generator function (is it a @contextmanager?): "
                f"the stage will time only the call that creates it, not the work. Put {_spelled(stage)} below "
                "@contextmanager, directly on the generator function.",
                stacklevel=stacklevel,
            )
        if func is target and _is_plain_function(target):
            return _plain_sync(site, target)
        wrapper = _sync_wrapper(site)
    return wrapt.FunctionWrapper(func, wrapper)


def _async_underneath(target: Any) -> bool:
    """Whether a sync callable's call returns a coroutine that is the work.

    That is a sync ``functools.wraps`` wrapper around a coroutine function, or an object whose ``__call__`` is
    ``async def``. Timed as async (awaiting what the call returns), or the stage would end before the work starts.
    """
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        return inspect.iscoroutinefunction(getattr(type(target), "__call__", None))  # noqa: B004 (the method itself)
    try:
        return inspect.iscoroutinefunction(inspect.unwrap(target))
    except ValueError:  # a __wrapped__ cycle
        return False


def _check_args(stage: str, model: object, version: object, batch_size: object) -> None:
    """Validate decorator arguments where they are written, never at call time."""
    for arg, value in (("model", model), ("version", version)):
        if value is not None and (not isinstance(value, str) or not value):
            raise TypeError(f"{_spelled(stage)}: {arg}= must be a non-empty string, got {value!r}")
    if batch_size is None or callable(batch_size):
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 0 <= batch_size <= _MAX_BATCH:
        raise TypeError(
            f"{_spelled(stage)}: batch_size= must be a non-negative int below 2**63 or a callable, "
            f"got {_Shown(batch_size)!r}"
        )


def _make_decorator(
    stage: str, model: str | None, version: str | None, batch_size: BatchSize | None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    _check_args(stage, model, version, batch_size)

    def decorator(func: Callable[P, R]) -> Callable[P, R]:
        return cast("Callable[P, R]", _decorate(func, stage, model, version, batch_size, stacklevel=4))

    return decorator


def _bare_or_factory(
    stage: str, func: object, model: str | None, version: str | None, batch_size: BatchSize | None
) -> Any:
    if func is None:
        return _make_decorator(stage, model, version, batch_size)
    if isinstance(func, str):
        raise TypeError(f"@obskit.{stage}({func!r}): arguments are keyword-only, e.g. @obskit.{stage}(model={func!r})")
    if model is not None or version is not None or batch_size is not None:
        raise TypeError(f"@obskit.{stage}: pass either the function or keyword arguments, not both")
    return _decorate(cast("Callable[..., Any]", func), stage, None, None, None, stacklevel=5)


def stage(
    name: str, *, model: str | None = None, version: str | None = None, batch_size: BatchSize | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Trace and measure calls of a function as a custom model stage.

    Each call gets a span named ``"{name} {model}"`` (a child of the current span) and is recorded in
    ``obskit.model.duration``, ``obskit.model.active`` and, when known, ``obskit.model.batch_size``, with
    ``model.stage`` set to ``name``. Works on functions, methods, ``async def``, generators and async
    generators; the wrapped function keeps its name, docstring and signature. Before ``obskit.init()``
    a call is a plain call.

    - ``async def``: the span covers the awaited execution (it opens when the coroutine is awaited).
    - Generators and async generators (streaming): the span opens at the first ``next()`` (a stream never
      iterated records nothing) but is timed from the call; it ends when the stream is exhausted,
      closed or raises. ``obskit.model.time_to_first_output`` records the time from the call to the first
      item. The span is current only while the generator's own code runs, never in the consumer.
    - A failure (an ``Exception``) sets the span status to ERROR, records the exception event and
      ``error.type`` (the exception class's ``__qualname__``, as OpenTelemetry's HTTP instrumentations do)
      on the span and the duration metric, and re-raises the same exception object. Other
      ``BaseException`` subclasses (``asyncio.CancelledError``, ``GeneratorExit``, ``KeyboardInterrupt``)
      end the span without an error, as OpenTelemetry's ``use_span`` does.

    Args:
        name: The stage name (``model.stage``), e.g. ``"tokenize"``.
        model: ``model.name``. Default: ``OBSKIT_MODEL_NAME``, else the function's ``__name__``.
        version: ``model.version``. Default: ``OBSKIT_MODEL_VERSION``, else ``"unknown"``.
        batch_size: An int, or a callable called with the call's arguments (``self``/``cls``
            excluded) that returns the number of items. :func:`set_batch_size` overrides it. Either
            is a non-negative int below 2**63 (OTLP's int64); a callable's other answers are ignored and
            logged once.

    Returns:
        A decorator that keeps the function's type.

    Raises:
        TypeError: When ``name``, ``model``, ``version`` or ``batch_size`` has the wrong type.

    Example:
        ```python
        @obskit.stage("tokenize", model="bert-base", batch_size=len)
        def tokenize(texts: list[str]) -> list[list[int]]: ...
        ```
    """
    _check_stage_name(name, "stage name")
    return _make_decorator(name, model, version, batch_size)


@overload
def preprocess(func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def preprocess(
    func: None = None, /, *, model: str | None = None, version: str | None = None, batch_size: BatchSize | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def preprocess(
    func: Callable[P, R] | None = None,
    /,
    *,
    model: str | None = None,
    version: str | None = None,
    batch_size: BatchSize | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Trace and measure a pre-processing step (``model.stage="preprocess"``); bare or with arguments.

    Same behaviour and arguments as :func:`stage`.

    Args:
        func: The function, when used bare (``@obskit.preprocess``).
        model: ``model.name``. Default: ``OBSKIT_MODEL_NAME``, else the function's ``__name__``.
        version: ``model.version``. Default: ``OBSKIT_MODEL_VERSION``, else ``"unknown"``.
        batch_size: An int, or a callable over the call's arguments returning the number of items.

    Returns:
        The wrapped function (bare use) or a decorator.

    Example:
        ```python
        @obskit.preprocess(model="fraud-xgb", version="3")
        def featurize(payload: dict[str, float]) -> list[float]: ...
        ```
    """
    return cast("Callable[P, R]", _bare_or_factory(_semconv.STAGE_PREPROCESS, func, model, version, batch_size))


@overload
def inference(func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def inference(
    func: None = None, /, *, model: str | None = None, version: str | None = None, batch_size: BatchSize | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def inference(
    func: Callable[P, R] | None = None,
    /,
    *,
    model: str | None = None,
    version: str | None = None,
    batch_size: BatchSize | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Trace and measure model inference (``model.stage="inference"``); bare or with arguments.

    Same behaviour and arguments as :func:`stage`. On a generator or async generator (a streaming
    response) it also records ``obskit.model.time_to_first_output``.

    Args:
        func: The function, when used bare (``@obskit.inference``).
        model: ``model.name``. Default: ``OBSKIT_MODEL_NAME``, else the function's ``__name__``.
        version: ``model.version``. Default: ``OBSKIT_MODEL_VERSION``, else ``"unknown"``.
        batch_size: An int, or a callable over the call's arguments returning the number of items.

    Returns:
        The wrapped function (bare use) or a decorator.

    Example:
        ```python
        @obskit.inference(model="fraud-xgb", version="3", batch_size=lambda rows: len(rows))
        def predict(rows: list[list[float]]) -> list[float]: ...
        ```
    """
    return cast("Callable[P, R]", _bare_or_factory(_semconv.STAGE_INFERENCE, func, model, version, batch_size))


@overload
def postprocess(func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def postprocess(
    func: None = None, /, *, model: str | None = None, version: str | None = None, batch_size: BatchSize | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def postprocess(
    func: Callable[P, R] | None = None,
    /,
    *,
    model: str | None = None,
    version: str | None = None,
    batch_size: BatchSize | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Trace and measure a post-processing step (``model.stage="postprocess"``); bare or with arguments.

    Same behaviour and arguments as :func:`stage`.

    Args:
        func: The function, when used bare (``@obskit.postprocess``).
        model: ``model.name``. Default: ``OBSKIT_MODEL_NAME``, else the function's ``__name__``.
        version: ``model.version``. Default: ``OBSKIT_MODEL_VERSION``, else ``"unknown"``.
        batch_size: An int, or a callable over the call's arguments returning the number of items.

    Returns:
        The wrapped function (bare use) or a decorator.

    Example:
        ```python
        @obskit.postprocess
        def to_response(scores: list[float]) -> dict[str, list[float]]: ...
        ```
    """
    return cast("Callable[P, R]", _bare_or_factory(_semconv.STAGE_POSTPROCESS, func, model, version, batch_size))


def set_batch_size(n: int) -> None:
    """Set the batch size of the decorated call that is running, from inside it.

    It is recorded as the span attribute ``model.batch_size`` and in ``obskit.model.batch_size``,
    and wins over the decorator's ``batch_size=``. Outside a decorated call, or before
    ``obskit.init()``, it does nothing. It applies to the innermost decorated call on the calling
    thread's stack; inside an ``async def`` or streaming stage, also from the tasks it creates and
    from ``asyncio.to_thread`` (their context is copied from the call's).

    Args:
        n: The number of items, a non-negative int below 2**63 (OTLP's int64). Anything else is ignored
            and logged once, never raised.

    Example:
        ```python
        @obskit.inference(model="ranker")
        def rank(request: Request) -> list[float]:
            candidates = fetch_candidates(request)
            obskit.set_batch_size(len(candidates))
            return model.predict(candidates)
        ```
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code in _call_codes:
            call = frame.f_locals.get("call")  # None when obskit failed to open the call: then nothing to set
            break
        frame = frame.f_back  # type: ignore[assignment]
    else:
        call = _current_call.get()  # a task or thread started inside an async or streaming call
    if type(call) is _Call:
        call.batch = _as_batch(n)
