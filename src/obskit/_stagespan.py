"""Stage spans queued as their export data, without the SDK's span object, when only obskit's pipeline sees them.

A traced stage call cost ~6 µs more than a metrics-only one (bench_stage.py), most of it the SDK ``Span``'s life:
its construction (an attribute store, a dict copy, two locks, a dozen fields), then at ``end()`` the processor
hooks, the redaction check and ``_otlp_trace.ended()`` turning the span back into the tuple that is queued. Yet a
stage's span differs from call to call only in its ids, its times and a batch size: everything else is known once
per decorated function.

So when the tracer is obskit's lean tracer and the provider's only processors are obskit's redaction and its
accounted batch processor (nothing else can observe a span start or end), a stage span is a small object holding
ids and times, and ``end()`` queues the very tuple ``ended()`` would have built (the encoder cannot tell them
apart; tests/spans/test_stagespan.py compares the two paths on the wire). Any other use of the span (an attribute other
than the batch size, an event, a status, a name change, reading it as an SDK span) first turns it into the SDK
span it stands for, with the same ids, times and attributes, and from then on everything goes through the SDK's
path. Not a subclass of the SDK's ``Span``: ``isinstance(span, opentelemetry.sdk.trace.Span)`` is False for a
stage span (the API's ``Span`` it is).

``QueuedSpan`` (what such a span does besides its own fields) and ``SpanSource`` (a tracer and the origin number
its tuples carry) are shared with the server spans of ``_serverspan``.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Mapping
from time import time_ns
from typing import Any, Final

from opentelemetry import trace as trace_api
from opentelemetry.trace import DEFAULT_TRACE_STATE, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.util import types

from . import _otlp_trace, _semconv
from ._context import IS_REMOTE, IS_VALID, SPAN_ID, TRACE_FLAGS, TRACE_ID, TRACE_STATE, current_context
from ._tracer import _SAMPLED, _SAMPLED_RANDOM, GuardedSpanProcessors, LeanTracer, _LeanSpan, _plain

_logger = logging.getLogger("opentelemetry.sdk.trace")  # the SDK's own logger, for the SDK's own warnings

_getrandbits = random.getrandbits
_new_context = tuple.__new__
_new_object = object.__new__
_INTERNAL: Final = SpanKind.INTERNAL
_INTERNAL_VALUE: Final = SpanKind.INTERNAL.value
_UNSET_VALUE: Final = StatusCode.UNSET.value
_BATCH: Final = _semconv.ATTR_MODEL_BATCH_SIZE
# Turning a stage span into an SDK span (at most once per span, seldom) and ending it: one lock for all of them.
_sdk_span_lock = threading.Lock()


class SpanSource:
    """A tracer whose spans are queued as tuples, with the origin number (resource, scope) the tuples carry."""

    __slots__ = ("_origin", "_processor", "_resource", "tracer")

    def __init__(self, tracer: LeanTracer, origin: int) -> None:
        self.tracer = tracer
        self._processor: GuardedSpanProcessors = tracer.span_processor  # type: ignore[assignment]
        self._origin = origin
        self._resource = tracer.resource

    def _follows_resource(self) -> bool:
        """Take the tracer's new resource (a worker forked from a preloaded master gets its own identity).

        False when it cannot be numbered: the SDK's path then.
        """
        resource = self.tracer.resource
        try:
            self._origin = _otlp_trace.origin(resource, self.tracer._instrumentation_scope)
        except _otlp_trace.UnsupportedSpanData:
            return False
        self._resource = resource
        return True


class StageSpans(SpanSource):
    """The spans of one decorated function under one tracer: what they share, computed once."""

    __slots__ = ("_flat", "_keys_and_batch", "_values", "attributes", "name")

    def __init__(self, tracer: LeanTracer, name: str, attributes: Mapping[str, Any], origin: int) -> None:
        super().__init__(tracer, origin)
        self.name = name
        self.attributes = attributes
        keys = tuple(attributes)
        self._flat = (*keys, *attributes.values())
        # With a batch size set during the call (SDK order: a key set again moves last; here it is last already).
        others = tuple(key for key in keys if key != _BATCH)
        self._keys_and_batch = (*others, _BATCH)
        self._values = tuple(attributes[key] for key in others)

    def start(self) -> trace_api.Span | None:
        """A started span, child of the current span; None when only the SDK's path will do."""
        queue = self._processor.own_queue
        if queue is None or (self.tracer.resource is not self._resource and not self._follows_resource()):
            return None
        parent: Any = current_context().get(_SPAN_KEY)
        if parent is None:
            return None  # a root span: the sampler decides
        parent_context = parent.get_span_context()
        flags = parent_context[TRACE_FLAGS]
        trace_state = parent_context[TRACE_STATE]
        if (
            not flags & 1  # an unsampled parent: the SDK's path (a non-recording span, or the sampler's choice)
            or not parent_context[IS_VALID]
            or (trace_state is not DEFAULT_TRACE_STATE and trace_state)  # queued as span objects (ended())
        ):
            return None
        span_id = _getrandbits(64)
        if not span_id:
            return None  # the invalid id: the id generator draws again
        span: Any = _new_object(StageSpan)
        span._spans = self
        span._queue = queue
        span._context = _new_context(
            SpanContext,
            (parent_context[TRACE_ID], span_id, False, _SAMPLED_RANDOM if flags & 2 else _SAMPLED, trace_state, True),
        )
        span._parent = parent_context
        span._batch = None
        span._end_time = None
        span._sdk_span = None
        span._start_time = time_ns()
        return span  # type: ignore[no-any-return]


def queueable_origin(tracer: object) -> int | None:
    """The origin number of ``tracer``'s spans when they may be queued as tuples, else None.

    That takes the tracer's lean path with random ids, obskit's span processors and no value-length limit.
    """
    if type(tracer) is not LeanTracer or not tracer._lean or not tracer._random_ids:
        return None
    if type(tracer.span_processor) is not GuardedSpanProcessors:
        return None
    if tracer._span_limits.max_span_attribute_length is not None:
        return None
    try:
        return _otlp_trace.origin(tracer.resource, tracer._instrumentation_scope)
    except _otlp_trace.UnsupportedSpanData:
        return None


def stage_spans(tracer: object, name: str, attributes: Mapping[str, Any]) -> StageSpans | None:
    """The cheaper spans of a stage, when ``tracer`` and its provider allow them (see the module docstring)."""
    from ._integrations._http import may_need_scrub

    origin = queueable_origin(tracer)
    if origin is None or not _plain(attributes) or may_need_scrub(tuple(attributes)):
        return None
    lean: LeanTracer = tracer  # type: ignore[assignment]  # queueable_origin checked it
    if not lean._child_sampling:
        return None
    maxlen = lean._span_limits.max_span_attributes
    if maxlen is not None and maxlen <= len(attributes):
        return None  # with a batch size, one more: keep the SDK's limit handling
    return StageSpans(lean, name, attributes, origin)


class QueuedSpan(trace_api.Span):
    """A span queued at ``end()`` as its export tuple, turned into the SDK span it stands for on any other use.

    What the stage and server spans share; a subclass knows its own fields (``_item``, ``_make``) and which calls
    it serves itself. Not a subclass of the SDK's ``Span`` (see the module docstring).
    """

    __slots__ = ("_context", "_end_time", "_parent", "_queue", "_sdk_span", "_start_time")

    _queue: Any  # _buffer._SdkQueue
    _context: SpanContext
    _parent: SpanContext | None
    _start_time: int
    _end_time: int | None
    _sdk_span: _LeanSpan | None

    def _item(self, end_time: int) -> _otlp_trace.EndedSpan:
        """What ``_otlp_trace.ended()`` makes of the SDK span this span stands for, ended at ``end_time``."""
        raise NotImplementedError

    def _make(self) -> _LeanSpan:
        """The SDK span this span stands for, live (called under ``_sdk_span_lock``, once)."""
        raise NotImplementedError

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        sdk_span = self._sdk_span
        return self._end_time is None if sdk_span is None else sdk_span.is_recording()

    def end(self, end_time: int | None = None) -> None:
        sdk_span = self._sdk_span
        if sdk_span is None:
            # Under the lock that also guards sdk_span(): ending from two threads at once, or while another thread
            # turns the span into the SDK's, queues it once (as the SDK span's own lock does). Uncontended: 0.1 µs.
            lock = _sdk_span_lock
            lock.acquire()  # not "with": see _tracer._LeanSpan.end
            try:
                sdk_span = self._sdk_span
                ended = self._end_time is not None
                if sdk_span is None and not ended:
                    self._end_time = end = end_time if end_time is not None else time_ns()
            finally:
                lock.release()
            if sdk_span is None:
                if ended:
                    _logger.warning("Calling end() on an ended span.")
                else:
                    self._queue.put(self._item(end))
                return
        sdk_span.end(end_time)

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        self.sdk_span().set_attribute(key, value)

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        self.sdk_span().set_attributes(attributes)

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        self.sdk_span().add_event(name, attributes, timestamp)

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        self.sdk_span().add_link(context, attributes)

    def update_name(self, name: str) -> None:
        self.sdk_span().update_name(name)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        self.sdk_span().set_status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        self.sdk_span().record_exception(exception, attributes, timestamp, escaped)

    def __getattr__(self, name: str) -> Any:
        # Anything else (name, attributes, events, to_json(), ...): the SDK span's.
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.sdk_span(), name)

    def sdk_span(self) -> _LeanSpan:
        """The SDK span this span stands for, made on first use; every later call goes to it."""
        sdk_span = self._sdk_span
        if sdk_span is not None:
            return sdk_span
        with _sdk_span_lock:
            if self._sdk_span is None:
                made = self._make()
                if self._end_time is not None:  # already queued: the SDK span is an ended one, never queued again
                    made._end_time = self._end_time
                    made._attributes._immutable = True  # type: ignore[union-attr]
                self._sdk_span = made
            return self._sdk_span

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._context!r})"


class StageSpan(QueuedSpan):
    """One stage call's span (see the module docstring)."""

    __slots__ = ("_batch", "_spans")

    _spans: StageSpans
    _batch: int | None

    def _item(self, end_time: int) -> _otlp_trace.EndedSpan:
        spans, context, batch = self._spans, self._context, self._batch
        parent: Any = self._parent  # always set for a stage span (a root call takes the SDK's path)
        return (
            spans._origin,
            spans.name,
            _INTERNAL_VALUE,
            context[TRACE_ID],
            context[SPAN_ID],
            parent[SPAN_ID],
            parent[IS_REMOTE],
            self._start_time,
            end_time,
            spans._flat if batch is None else (*spans._keys_and_batch, *spans._values, batch),
            _UNSET_VALUE,
            None,
        )

    def _make(self) -> _LeanSpan:
        spans = self._spans
        made = spans.tracer._lean_span(
            spans.name, self._context, self._parent, _INTERNAL, spans.attributes, self._start_time
        )
        if self._batch is not None:
            made.set_attribute(_BATCH, self._batch)
        return made

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if self._sdk_span is None and key == _BATCH and type(value) is int and self._end_time is None:
            self._batch = value  # the stage wrapper's own attribute, set as it ends the call
            return
        self.sdk_span().set_attribute(key, value)
