"""Server spans queued as their export data, without the SDK's span object, when only obskit's pipeline sees them.

The same design as the stage spans (``_stagespan``), for the span obskit's WSGI and ASGI middlewares make per
request: a server span's life through the SDK's span (its construction, an attribute store with a lock, the name,
route and status calls, the processors' hooks, the redaction check and ``_otlp_trace.ended()``) cost ~5 µs per
request in-process; this one keeps the name, the attribute dict the middleware built, the ids, the times and a
status, and ``end()`` queues the tuple ``ended()`` would have built.

It serves only what the middlewares do in the common case: attributes built by obskit itself (``CleanAttributes``)
that redaction would not touch, a root span under a sampler that samples every root (``always_on``,
``parentbased_always_on``), or the child of a sampled parent without a trace state. Anything else (a captured
header, a query string, an exception event, the application's own calls on the current span) first turns it into
the SDK span it stands for (``QueuedSpan.sdk_span``), and from then on everything goes through the SDK's path;
``tests/spans/test_serverspan.py`` compares the two paths on the wire, request by request, for both frameworks.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from time import time_ns
from typing import Any, Final

from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.trace import DEFAULT_TRACE_STATE, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.util import types

from . import _otlp_trace
from ._context import IS_REMOTE, IS_VALID, SPAN_ID, TRACE_FLAGS, TRACE_ID, TRACE_STATE, current_context
from ._integrations._http import may_need_scrub
from ._stagespan import QueuedSpan, SpanSource, _sdk_span_lock, queueable_origin
from ._tracer import _SAMPLED, _SAMPLED_RANDOM, CleanAttributes, LeanTracer, _LeanSpan

_getrandbits = random.getrandbits
_new_context = tuple.__new__
_new_object = object.__new__
_INVALID_SPAN: Final = trace_api.INVALID_SPAN
_ERROR: Final = StatusCode.ERROR
_UNSET_VALUE: Final = StatusCode.UNSET.value
_SIMPLE: Final = frozenset({str, bool, int, float})
# Attributes a middleware may add after the start (route, status code, error type): room kept under the limit.
_LATER_ATTRIBUTES: Final = 4


class ServerSpans(SpanSource):
    """The server spans of one middleware's tracer: what they share, computed once."""

    __slots__ = ("_maxlen",)

    def __init__(self, tracer: LeanTracer, origin: int) -> None:
        super().__init__(tracer, origin)
        self._maxlen: int | None = tracer._span_limits.max_span_attributes

    def start(
        self, name: str, context: Context | None, kind: SpanKind, attributes: Any, start_time: int | None = None
    ) -> trace_api.Span | None:
        """A started span (as ``tracer.start_span`` would make it); None when only the SDK's path will do."""
        queue = self._processor.own_queue
        if queue is None or type(attributes) is not CleanAttributes:
            return None
        maxlen = self._maxlen
        if (maxlen is not None and len(attributes) + _LATER_ATTRIBUTES > maxlen) or may_need_scrub(tuple(attributes)):
            return None
        tracer = self.tracer
        if tracer.resource is not self._resource and not self._follows_resource():
            return None
        parent_span: Any = (context if context is not None else current_context()).get(_SPAN_KEY, _INVALID_SPAN)
        parent: Any = None if parent_span is _INVALID_SPAN else parent_span.get_span_context()
        if parent is None or not parent[IS_VALID]:
            if not tracer._roots_sampled:
                return None  # the sampler decides
            parent = None
            trace_id = _getrandbits(128)
            if not trace_id:
                return None  # the invalid id: the SDK's path draws again
            flags = _SAMPLED_RANDOM
            trace_state = DEFAULT_TRACE_STATE
        else:
            flags = parent[TRACE_FLAGS]
            trace_state = parent[TRACE_STATE]
            if (
                not tracer._child_sampling
                or not flags & 1
                or (trace_state is not DEFAULT_TRACE_STATE and trace_state)  # queued as span objects (ended())
            ):
                return None
            trace_id = parent[TRACE_ID]
            flags = _SAMPLED_RANDOM if flags & 2 else _SAMPLED
        span_id = _getrandbits(64)
        if not span_id:
            return None
        span: Any = _new_object(ServerSpan)
        span._spans = self
        span._queue = queue
        span._context = _new_context(trace_api.SpanContext, (trace_id, span_id, False, flags, trace_state, True))
        span._parent = parent
        span._name = name
        span._kind = kind
        span._attributes = attributes  # the middleware's own dict, handed over
        span._status = None
        span._end_time = None
        span._sdk_span = None
        span._start_time = start_time if start_time is not None else time_ns()
        return span  # type: ignore[no-any-return]


def server_spans(tracer: object) -> ServerSpans | None:
    """The cheaper server spans of ``tracer``, when it and its provider allow them (see the module docstring)."""
    origin = queueable_origin(tracer)
    return None if origin is None else ServerSpans(tracer, origin)  # type: ignore[arg-type]  # a LeanTracer


def _merge(store: dict[str, Any], attributes: Mapping[str, Any]) -> None:
    """Add ``attributes`` to a span's store as the SDK's attribute store does."""
    for key, value in attributes.items():
        store.pop(key, None)  # a key set again moves last
        store[key] = value


class ServerSpan(QueuedSpan):
    """One request's server span (see the module docstring).

    Its own calls (attributes, name, an error status) take the lock ``end()`` and the conversion to the SDK span
    take, so that none of them is lost to a concurrent one, as under the SDK span's own lock.
    """

    __slots__ = ("_attributes", "_kind", "_name", "_spans", "_status")

    _spans: ServerSpans
    _name: str
    _kind: SpanKind
    _attributes: dict[str, Any]
    _status: Status | None

    def _item(self, end_time: int) -> _otlp_trace.EndedSpan:
        context, parent, attributes, status = self._context, self._parent, self._attributes, self._status
        return (
            self._spans._origin,
            self._name,
            self._kind._value_,
            context[TRACE_ID],
            context[SPAN_ID],
            parent[SPAN_ID] if parent else 0,
            parent[IS_REMOTE] if parent else False,
            self._start_time,
            end_time,
            (*attributes, *attributes.values()),
            _UNSET_VALUE if status is None else status._status_code._value_,
            None if status is None else status._description,
        )

    def _make(self) -> _LeanSpan:
        made = self._spans.tracer._lean_span(
            self._name, self._context, self._parent, self._kind, self._attributes, self._start_time
        )
        if self._status is not None:
            made._status = self._status
        return made

    def _fits(self, keys: tuple[str, ...]) -> bool:
        """Whether these keys can join the attributes without redaction or the SDK's limit handling."""
        maxlen = self._spans._maxlen
        return (maxlen is None or len(self._attributes) + len(keys) <= maxlen) and not may_need_scrub(keys)

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self._sdk_span is None and type(attributes) is CleanAttributes and self._fits(tuple(attributes)):
            lock = _sdk_span_lock
            lock.acquire()
            try:
                if self._sdk_span is None and self._end_time is None:
                    _merge(self._attributes, attributes)
                    return
            finally:
                lock.release()
        self.sdk_span().set_attributes(attributes)

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if self._sdk_span is None and type(value) in _SIMPLE and type(key) is str and key and self._fits((key,)):
            lock = _sdk_span_lock
            lock.acquire()
            try:
                if self._sdk_span is None and self._end_time is None:
                    store = self._attributes
                    if key in store:
                        del store[key]
                    store[key] = value
                    return
            finally:
                lock.release()
        self.sdk_span().set_attribute(key, value)

    def update_name(self, name: str) -> None:
        lock = _sdk_span_lock
        lock.acquire()
        try:
            if self._sdk_span is None and self._end_time is None:
                self._name = name
                return
        finally:
            lock.release()
        self.sdk_span().update_name(name)

    def current_name(self) -> str | None:
        """The span's name now (the very object it started with until renamed)."""
        sdk_span = self._sdk_span
        return self._name if sdk_span is None else getattr(sdk_span, "name", None)

    def respond(
        self, name: str | None, attributes: CleanAttributes, status: Status | None, named: str | None = None
    ) -> None:
        """The middleware's calls at the response, in one.

        That is ``update_name(name)`` (None: the name stays) unless the app renamed the span (its name is no longer
        the object ``named`` it started with: contrib names the span once, at its start), then if the span is recording
        ``set_attributes(attributes)`` and ``set_status(status)`` (None: no call). ``attributes`` are the
        middleware's route and response attributes (``http.route``, ``http.response.status_code``,
        ``error.type``): str and int values under keys never redacted, for which ``start()`` kept room.
        ``status``: an ERROR status without description.
        """
        if self._sdk_span is None:
            maxlen = self._spans._maxlen
            lock = _sdk_span_lock
            lock.acquire()
            try:
                store = self._attributes
                if (
                    self._sdk_span is None
                    and self._end_time is None
                    and (status is None or self._status is None)
                    and (maxlen is None or len(store) + len(attributes) <= maxlen)
                ):
                    if name is not None and self._name is named:
                        self._name = name
                    _merge(store, attributes)
                    if status is not None:
                        self._status = status
                    return
            finally:
                lock.release()
        if name is not None and self.current_name() is named:
            self.update_name(name)
        if self.is_recording():
            self.set_attributes(attributes)
            if status is not None:
                self.set_status(status)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # The middlewares' one call: an ERROR Status on a span without one (anything else: the SDK's rules).
        if type(status) is Status and description is None and status._status_code is _ERROR:
            lock = _sdk_span_lock
            lock.acquire()
            try:
                if self._sdk_span is None and self._end_time is None and self._status is None:
                    self._status = status
                    return
            finally:
                lock.release()
        self.sdk_span().set_status(status, description)
