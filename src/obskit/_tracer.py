"""A cheaper path through the SDK's span lifecycle, for the spans a model server makes on every request.

The SDK's ``Tracer.start_span`` + ``Span.end`` cost ~25 µs per span on the benchmark machine (benchmarks/README.md,
"Where the time goes"): re-validating every attribute through ``BoundedAttributes`` (also the constant stage
attributes, on every call), building an event list, a link list and a second ``ReadableSpan`` copy at ``end()``,
a lock, and a full sampler call for every child span. obskit serves four spans per request, so that was a third
of the full-telemetry budget before a byte was exported.

What stays the SDK's: the ``TracerProvider`` (resource, sampler, span limits, processors, shutdown), the ``Span``
class the application and every processor or exporter sees (``_LeanSpan`` is a subclass; nothing reads it
differently), ids from the provider's id generator. What changes, when it cannot change behaviour:

- Attributes made only of ``str``/``bool``/``int``/``float`` values under the default limits (no value-length
  limit, within the count limit) are stored as given: the SDK's cleaning would return them unchanged. Anything
  else takes the SDK's ``BoundedAttributes`` path.
- A child of a local or remote parent under the default ``parentbased_*`` sampler follows its parent's sampled
  flag without a sampler call (what ``ParentBased`` with its default delegates decides). Root spans, links and
  any other sampler go through ``sampler.should_sample`` as before.
- Events and links lists are created on first use; ``end()`` hands the ended span itself to the processors
  instead of a ``ReadableSpan`` copy (every mutator of an ended span is already a no-op).
- The SDK's internal tracer metrics (``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``) or a tracer configurator that
  disables tracers: the SDK's own path, unchanged.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Mapping, Sequence
from time import time_ns
from types import MappingProxyType
from typing import Any, Final

from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace import SpanProcessor, SynchronousMultiSpanProcessor, Tracer, TracerProvider, sampling
from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import DEFAULT_TRACE_STATE, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util import types

from . import _safety
from ._context import IS_VALID, TRACE_FLAGS, TRACE_ID, TRACE_STATE, current_context

_logger = logging.getLogger("opentelemetry.sdk.trace")  # the SDK's own logger, for the SDK's own warnings

_SIMPLE: Final = frozenset({str, bool, int, float})
_STR: Final = frozenset({str})
_UNSET_STATUS: Final = Status(StatusCode.UNSET)
_NO_ITEMS: Final[tuple[()]] = ()
_SAMPLED: Final = TraceFlags(TraceFlags.SAMPLED)
_SAMPLED_RANDOM: Final = TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
_NOT_SAMPLED: Final = TraceFlags(TraceFlags.DEFAULT)
_NOT_SAMPLED_RANDOM: Final = TraceFlags(TraceFlags.RANDOM_TRACE_ID)
_new_object = object.__new__
_getrandbits = random.getrandbits  # what RandomIdGenerator draws from (the random module's shared generator)
_new_context = tuple.__new__  # SpanContext is a tuple; its __new__ only re-checks ids we just generated
_INVALID_SPAN: Final = trace_api.INVALID_SPAN


class CleanAttributes(dict[str, "str | bool | int | float"]):
    """Span attributes an obskit integration built itself from ``str``/``bool``/``int``/``float`` values.

    ``start_span`` takes them without re-checking each value (a server span has a dozen attributes: ~1 µs).
    """


# Read-only attribute views already found clean (obskit's stage attributes: the same object on every call), kept
# alive here so that an id is never reused while cached.
_clean_views: dict[int, Mapping[str, Any]] = {}
_CLEAN_VIEWS_MAX: Final = 1024


def _plain(attributes: Mapping[str, Any]) -> bool:
    """Non-empty str keys and str/bool/int/float values only: what the SDK's cleaning keeps as it is.

    Checked in C (map + issuperset), not a Python loop: a server span has a dozen attributes.
    """
    return (
        _SIMPLE.issuperset(map(type, attributes.values()))
        and _STR.issuperset(map(type, attributes))
        and "" not in attributes
    )


def _attributes(attributes: types.Attributes, limits: Any) -> BoundedAttributes:
    """The span's attribute store: the caller's values as they are when the SDK's cleaning could not change them."""
    maxlen = limits.max_span_attributes
    if attributes:
        if limits.max_span_attribute_length is not None or (maxlen is not None and len(attributes) > maxlen):
            return BoundedAttributes(
                maxlen, attributes, immutable=False, max_value_len=limits.max_span_attribute_length
            )
        if type(attributes) is not CleanAttributes and _clean_views.get(id(attributes)) is not attributes:
            if not _plain(attributes):
                return BoundedAttributes(maxlen, attributes, immutable=False, max_value_len=None)
            if type(attributes) is MappingProxyType:
                if len(_clean_views) >= _CLEAN_VIEWS_MAX:
                    _clean_views.clear()
                _clean_views[id(attributes)] = attributes
    store = BoundedAttributes.__new__(BoundedAttributes)
    if not attributes:
        store._dict = {}
    elif type(attributes) is MappingProxyType and type(copied := attributes.copy()) is dict:
        store._dict = copied  # dict(view) goes through the generic mapping protocol: 0.49 µs against 0.06 µs
    else:
        store._dict = dict(attributes)
    store.maxlen = maxlen
    store.dropped = 0
    store.max_value_len = None
    store._lock = threading.Lock()
    store._immutable = False
    return store


class _LeanSpan(SdkSpan):
    """The SDK's span, built without its constructor (see the module docstring); behaves as an SDK ``Span``."""

    # Defaults as class attributes (an instance attribute replaces one when set): fewer stores per span.
    _end_time = None
    _events: Any = _NO_ITEMS
    _links: Any = _NO_ITEMS
    _status = _UNSET_STATUS
    _trace_config = None
    _record_end_metrics = None
    _record_exception = True
    _set_status_on_exception = True

    def get_span_context(self) -> SpanContext:
        return self._context  # type: ignore[return-value]  # always set here; the SDK's method adds a typing.cast()

    def _add_event(self, event: Any) -> None:
        self._append("_events", self._limits.max_events, event, "_add_event")

    def _add_link(self, link: trace_api.Link) -> None:
        self._append("_links", self._limits.max_links, link, "_add_link")

    def _append(self, field: str, maxlen: int | None, item: Any, caller: str) -> None:
        """Add an event or a link, creating the span's bounded list on first use (lean spans share an empty one)."""
        with self._lock:
            if self._end_time is None:
                items: Any = getattr(self, field)
                if items is _NO_ITEMS:
                    items = BoundedList(maxlen)
                    setattr(self, field, items)
                items.append(item)
                return
        _logger.warning("Tried calling %s on an ended span.", caller)

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        attributes: Any = self._attributes
        store = attributes._dict
        maxlen = attributes.maxlen
        if (
            type(value) not in _SIMPLE
            or type(key) is not str
            or not key
            or attributes.max_value_len is not None
            or (maxlen is not None and len(store) >= maxlen and key not in store)
        ):
            super().set_attribute(key, value)
            return
        # What BoundedAttributes.__setitem__ does for a value its cleaning would keep as is, under the span's lock
        # (every writer of a live span's attributes holds it).
        with self._lock:
            if self._end_time is None:
                if key in store:
                    del store[key]
                store[key] = value
                return
        _logger.warning("Setting attribute on ended span.")

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        store_attributes: Any = self._attributes
        maxlen = store_attributes.maxlen
        store = store_attributes._dict
        if (
            store_attributes.max_value_len is not None
            or (maxlen is not None and len(store) + len(attributes) > maxlen)
            or (type(attributes) is not CleanAttributes and not _plain(attributes))
        ):
            super().set_attributes(attributes)
            return
        # What BoundedAttributes stores for values its cleaning keeps as they are, under the span's lock.
        with self._lock:
            if self._end_time is None:
                for key, value in attributes.items():
                    if key in store:
                        del store[key]
                    store[key] = value
                return
        _logger.warning("Setting attribute on ended span.")

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end_time is None and (
            status is StatusCode.UNSET or (type(status) is Status and status.status_code is StatusCode.UNSET)
        ):
            return  # what the SDK does with UNSET on a live span, without its lock and wrapper
        super().set_status(status, description)

    def update_name(self, name: str) -> None:
        with self._lock:
            if self._end_time is None:
                self._name = name
                return
        _logger.warning("Tried calling %s on an ended span.", "update_name")

    def end(self, end_time: int | None = None) -> None:
        lock = self._lock
        lock.acquire()  # not "with": on CPython 3.11 the with statement costs 0.2 µs here, acquire/release 0.09
        try:
            if self._end_time is not None:
                _logger.warning("Calling end() on an ended span.")
                return
            self._end_time = end_time if end_time is not None else time_ns()
            self._attributes._immutable = True  # type: ignore[union-attr]
        finally:
            lock.release()
        processor = self._span_processor
        if type(processor) is GuardedSpanProcessors:
            processor.end(self)  # both hooks in one call
        else:
            processor._on_ending(self)
            processor.on_end(self)


def _children_follow_parent(sampler: sampling.Sampler) -> bool:
    """Whether a child of a valid parent is sampled exactly when its parent is (ParentBased, default delegates)."""
    if not isinstance(sampler, sampling.ParentBased):
        return False
    return (
        sampler._remote_parent_sampled is sampling.ALWAYS_ON
        and sampler._remote_parent_not_sampled is sampling.ALWAYS_OFF
        and sampler._local_parent_sampled is sampling.ALWAYS_ON
        and sampler._local_parent_not_sampled is sampling.ALWAYS_OFF
    )


def _passes_attributes_through(sampler: sampling.Sampler) -> bool:
    """The SDK's static, ratio and parent-based samplers: a recording decision carries the given attributes."""
    if type(sampler) in (sampling.StaticSampler, sampling.TraceIdRatioBased):
        return True
    if type(sampler) in (sampling.ParentBased, sampling.ParentBasedTraceIdRatio):
        parent_based: Any = sampler
        return all(
            _passes_attributes_through(delegate)
            for delegate in (
                parent_based._root,
                parent_based._remote_parent_sampled,
                parent_based._remote_parent_not_sampled,
                parent_based._local_parent_sampled,
                parent_based._local_parent_not_sampled,
            )
        )
    return False


class LeanTracer(Tracer):
    """The SDK's tracer with a cheaper ``start_span`` (see the module docstring)."""

    _child_sampling: int  # 0: ask the sampler; 1: follow the parent's sampled flag; 2: always sampled
    _lean: bool
    _random_ids: bool  # the SDK's RandomIdGenerator: a span id is getrandbits(64), 0 excluded
    _roots_sampled: bool  # ALWAYS_ON, or ParentBased with ALWAYS_ON for roots: every root span is sampled
    _keeps_attributes: bool  # the sampler's result carries the attributes it was given, unchanged

    def _prepare(self) -> LeanTracer:
        sampler = self.sampler
        self._child_sampling = 1 if _children_follow_parent(sampler) else 2 if sampler is sampling.ALWAYS_ON else 0
        self._lean = self._tracer_config.is_enabled and isinstance(self._tracer_metrics, NoOpTracerMetrics)
        self._random_ids = type(self.id_generator) is RandomIdGenerator
        self._roots_sampled = sampler is sampling.ALWAYS_ON or (
            type(sampler) is sampling.ParentBased and sampler._root is sampling.ALWAYS_ON
        )
        self._keeps_attributes = _passes_attributes_through(sampler)
        return self

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace_api.Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace_api.Span:
        if links or not self._lean:
            return super().start_span(
                name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
            )
        # trace.get_current_span(context), two calls shallower
        parent: Any = (context if context is not None else current_context()).get(_SPAN_KEY, _INVALID_SPAN)
        parent = None if parent is _INVALID_SPAN else parent.get_span_context()
        trace_state: Any
        result: Any = None  # the sampler's answer, when it was asked
        if parent is not None and parent[IS_VALID] and self._child_sampling:
            # What the sampler would decide, without the call: its SamplingResult keeps the attributes and the
            # parent's trace state.
            trace_id = parent[TRACE_ID]
            flags = parent[TRACE_FLAGS]
            if flags & 1 or self._child_sampling == 2:
                trace_flags = _SAMPLED_RANDOM if flags & 2 else _SAMPLED
            else:
                trace_flags = _NOT_SAMPLED_RANDOM if flags & 2 else _NOT_SAMPLED
            trace_state = parent[TRACE_STATE]
            span_attributes = attributes
        else:
            if parent is None or not parent[IS_VALID]:
                parent = None
                # RandomIdGenerator.generate_trace_id() inlined (0 is the invalid id it draws again)
                trace_id = _getrandbits(128) if self._random_ids else 0
                if not trace_id:
                    trace_id = self.id_generator.generate_trace_id()
                random_id = self._random_ids or self.id_generator.is_trace_id_random()
            else:
                trace_id = parent[TRACE_ID]
                random_id = parent[TRACE_FLAGS].random_trace_id
            if parent is None and self._roots_sampled:
                # What ALWAYS_ON, alone or as ParentBased's root sampler, decides for a root: sampled, the attributes
                # as given, no trace state (a server span per request: the sampler's six calls saved).
                trace_flags = _SAMPLED_RANDOM if random_id else _SAMPLED
                trace_state = DEFAULT_TRACE_STATE
                span_attributes = attributes
            else:
                result = self.sampler.should_sample(context, trace_id, name, kind, attributes, links)
                if result.decision.is_sampled():
                    trace_flags = _SAMPLED_RANDOM if random_id else _SAMPLED
                else:
                    trace_flags = _NOT_SAMPLED_RANDOM if random_id else _NOT_SAMPLED
                if not result.decision.is_recording():
                    return trace_api.NonRecordingSpan(
                        SpanContext(
                            trace_id, self.id_generator.generate_span_id(), False, trace_flags, result.trace_state
                        )
                    )
                trace_state = result.trace_state
                if trace_state is None:
                    trace_state = DEFAULT_TRACE_STATE
                # The SDK's own samplers hand back the attributes they were given (wrapped in a new read-only
                # view): the given object is kept, so that obskit's CleanAttributes are not checked again.
                span_attributes = attributes if self._keeps_attributes else result.attributes
        # RandomIdGenerator.generate_span_id() inlined (0 is the invalid id it draws again)
        span_id = _getrandbits(64) if self._random_ids else 0
        if not span_id:
            span_id = self.id_generator.generate_span_id()
        span_context = _new_context(SpanContext, (trace_id, span_id, False, trace_flags, trace_state, True))
        if not trace_flags & 1 and result is None:  # a sampler's RECORD_ONLY records an unsampled span
            return trace_api.NonRecordingSpan(span_context)
        span = self._lean_span(name, span_context, parent, kind, span_attributes, start_time)
        if not record_exception:
            span._record_exception = False
        if not set_status_on_exception:
            span._set_status_on_exception = False
        processor = self.span_processor
        if type(processor) is not GuardedSpanProcessors or processor._starting:  # no call when no one listens
            processor.on_start(span, parent_context=context)
        return span

    def _lean_span(
        self,
        name: str,
        span_context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: types.Attributes,
        start_time: int | None,
    ) -> _LeanSpan:
        """A started span of this tracer (processors not told: the caller does that)."""
        limits = self._span_limits
        span: Any = _new_object(_LeanSpan)  # the SDK Span's __new__ only refuses its own class
        span._name = name
        span._context = span_context
        span._kind = kind
        span._instrumentation_info = self.instrumentation_info
        span._instrumentation_scope = self._instrumentation_scope
        span._parent = parent
        span._attributes = _attributes(attributes, limits)
        span._resource = self.resource
        span._sampler = self.sampler
        span._span_processor = self.span_processor
        span._limits = limits
        span._lock = threading.Lock()
        span._start_time = start_time if start_time is not None else time_ns()
        lean: _LeanSpan = span
        return lean


class LeanTracerProvider(TracerProvider):
    """The SDK's provider, handing out :class:`LeanTracer` instances."""

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes = None,
    ) -> trace_api.Tracer:
        tracer = super().get_tracer(instrumenting_module_name, instrumenting_library_version, schema_url, attributes)
        if type(tracer) is Tracer:
            # Same object, same state, a subclass that adds no fields: every tracer the SDK cached is switched once.
            tracer.__class__ = LeanTracer
            tracer._prepare()  # type: ignore[attr-defined]
        return tracer


class GuardedSpanProcessors(SynchronousMultiSpanProcessor):
    """The SDK's multi-processor, except that a failing processor is counted and logged once, never raised.

    A span processor runs inside ``span.start()``/``span.end()``, that is inside the application's request: the
    SDK lets its exceptions through. Processors whose hook is the base class's no-op are skipped for that hook.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._starting: tuple[SpanProcessor, ...] = ()
        self._ending: tuple[SpanProcessor, ...] = ()
        self._ended: tuple[SpanProcessor, ...] = ()
        # The queue of obskit's batch processor when it and obskit's redaction are the only processors with a
        # hook: then a span may be queued without the hooks (_stagespan, _serverspan). None otherwise.
        self.own_queue: Any = None

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)  # takes the lock, sets the tuple of processors
        with self._lock:
            processors = self._span_processors
            starting = tuple(p for p in processors if _implements(p, "on_start"))
            # Redacting at start protects only a later processor's on_start: without one, the redaction at
            # _on_ending (before any exporter reads the ended span) is enough.
            self._starting = starting if any(not _is_redaction(p) for p in starting) else ()
            self._ending = tuple(p for p in processors if _implements(p, "_on_ending"))
            self._ended = tuple(p for p in processors if _implements(p, "on_end"))
            self.own_queue = _own_queue(self._starting, self._ending, self._ended)

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        for processor in self._starting:
            try:
                processor.on_start(span, parent_context=parent_context)
            except Exception:
                _failed(processor)

    def _on_ending(self, span: Any) -> None:
        _each(self._ending, "_on_ending", span)

    def on_end(self, span: Any) -> None:
        _each(self._ended, "on_end", span)

    def end(self, span: Any) -> None:
        """``_on_ending`` then ``on_end`` in one call: every obskit span ends here (so the loops are written out)."""
        for processor in self._ending:
            try:
                processor._on_ending(span)
            except Exception:
                _failed(processor)
        for processor in self._ended:
            try:
                processor.on_end(span)
            except Exception:
                _failed(processor)


def _own_queue(
    starting: tuple[SpanProcessor, ...], ending: tuple[SpanProcessor, ...], ended: tuple[SpanProcessor, ...]
) -> Any:
    """The accounted queue of obskit's batch processor, if nothing else would see a span start or end."""
    from ._buffer import AccountedBatchSpanProcessor

    if starting or not all(_is_redaction(p) for p in ending) or len(ended) != 1:
        return None
    processor = ended[0]
    return processor._account if type(processor) is AccountedBatchSpanProcessor else None


def _each(processors: tuple[SpanProcessor, ...], hook: str, span: Any) -> None:
    for processor in processors:
        try:
            getattr(processor, hook)(span)
        except Exception:
            _failed(processor)


def _implements(processor: SpanProcessor, hook: str) -> bool:
    method = getattr(type(processor), hook, None)
    return method is not None and method not in _no_op_hooks()


def _no_op_hooks() -> frozenset[Any]:
    """Hooks known to do nothing (the SDK's base class and batch/simple processors', obskit's redaction ``on_end``)."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    from ._integrations._http import RedactingSpanProcessor

    return frozenset(
        {
            SpanProcessor.on_start,
            SpanProcessor._on_ending,
            SpanProcessor.on_end,
            BatchSpanProcessor.on_start,
            BatchSpanProcessor._on_ending,
            SimpleSpanProcessor.on_start,
            SimpleSpanProcessor._on_ending,
            RedactingSpanProcessor.on_end,
        }
    )


def _is_redaction(processor: SpanProcessor) -> bool:
    from ._integrations._http import RedactingSpanProcessor

    return isinstance(processor, RedactingSpanProcessor)


def _failed(processor: SpanProcessor) -> None:
    with _safety.swallow_errors(f"span processor {type(processor).__name__}"):
        raise
