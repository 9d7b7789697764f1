"""An OTLP ``ExportTraceServiceRequest`` encoder that writes the protobuf wire format directly.

Its output is byte-identical to ``encode_spans(spans).SerializeToString()`` of
``opentelemetry.exporter.otlp.proto.common._internal.trace_encoder`` (1.45): the same grouping (resource, then
instrumentation scope, by equality, in first-seen order), the same fields (e.g. a link's trace_state is not sent,
a span's status always is) and upb's field-number order. It is ~18x cheaper (benchmarks/bench_encode.py) because it
builds no message objects, encodes each span in one loop without a call per field, and reuses the encoding of what
repeats: resources, scopes, span names with their kind, a trace's id, status objects, whole attribute sets of a
few attributes (by contents) and the attribute pairs of larger ones.

For speed it reads the spans' private fields (``_context``, ``_attributes._dict``, ``_events._dq``...) instead of
their public properties, which cost a call each and copy events and links under a lock. It does so only for span
classes whose public accessors are those plain reads (the SDK's ``ReadableSpan`` and ``Span``, and subclasses that
override none of them, checked once per class); a byte-identity test against the SDK's encoder guards the rest.

Anything it does not handle (a value of another type, an int outside int64, a string that is not valid UTF-8...)
raises :class:`UnsupportedSpanData`; the caller then uses the SDK's encoder, which also owns the SDK's handling of
invalid values (logging and skipping the attribute).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanKind
from opentelemetry.trace.span import DEFAULT_TRACE_STATE
from opentelemetry.trace.status import Status, StatusCode

from ._tracer import _LeanSpan

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace.span import TraceState

__all__ = ["EndedSpan", "UnsupportedSpanData", "as_readable", "encode_spans", "ended"]


_T = TypeVar("_T")


class UnsupportedSpanData(ValueError):
    """A span holds something this encoder does not write; encode the batch with the SDK's encoder instead."""


_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_UINT32_MAX: Final = (1 << 32) - 1
_MASK64: Final = (1 << 64) - 1

_pack_fixed64 = struct.Struct("<Q").pack
_pack_double = struct.Struct("<d").pack
_pack_times = struct.Struct("<BQBQ").pack  # start and end with their one-byte tags
# trace_id (its tag and length, then its 16 bytes), span_id and parent_span_id, each after its tag and length.
_pack_ids = struct.Struct(">2s16s2sQ").pack
_pack_ids_parent = struct.Struct(">2s16s2sQ2sQ").pack

# Per field tag, (key, value, type(value)) -> the tag and KeyValue, for str/bool/int values; cleared when full.
_KV_CACHE_MAX: Final = 4096
_KV_CACHE_MAX_STR: Final = 256  # longer values rarely repeat; don't let them pin memory
_kv_caches: dict[bytes, dict[tuple[str, Any, type], bytes]] = {}
# A span's attributes, when its keys are all exactly str and its values exactly str or int (bool and float are left
# out: True == 1 == 1.0 and -0.0 == 0.0 would find another value's bytes). Keyed by contents, never by identity: a
# dict changed between batches is a new key, equal contents in a new dict (obskit's stage spans) are found. Cleared
# when full.
# - Up to _BLOCK_MAX_ITEMS attributes (obskit's stage spans: the same contents on every call): (*keys, *values) ->
#   (all the span's attribute fields, the positions of the int values in the key). An equal key holds equal strings
#   (or str subclasses, which encode the same) but maybe a bool or float equal to an int: a hit checks the ints'
#   types instead of every value's.
# - More (a server span: most pairs repeat, some vary per request): after a type check of the values,
#   (key, value) -> that attribute's field (tag and KeyValue).
_BLOCK_CACHE_MAX: Final = 1024
_BLOCK_MAX_ITEMS: Final = 8
_BLOCK_MAX_BYTES: Final = 1024
_block_cache: dict[tuple[Any, ...], tuple[bytes, tuple[int, ...]]] = {}
_SPAN_KV_CACHE_MAX: Final = 4096
_span_kv_cache: dict[tuple[str, str | int], bytes] = {}
# A new value with every connection: with keep-alive (uvicorn) a few values repeat, without (gunicorn's sync
# worker) every request brings one. At most _CONNECTION_PAIRS_MAX of them stay in _span_kv_cache, removed
# together when there are more: they must not fill it and clear the pairs that repeat every few thousand requests.
# (Queued items, obskit's own server spans, keep the client port out of their cache instead: _item_cache.)
_CLIENT_PORT: Final = "client.port"
_PER_CONNECTION_KEYS: Final = frozenset({_CLIENT_PORT, "network.peer.port"})
_CONNECTION_PAIRS_MAX: Final = 64
_connection_pairs: list[tuple[str, str | int]] = []
_STR_OR_INT: Final = frozenset({str, int})
_STR: Final = frozenset({str})
# An EndedSpan item's fields that repeat from call to call (a stage span's: all but its ids and times; a server
# span's: all but its ids, times and client port), keyed by (name, kind value, remote parent, status code value,
# status description, the flat attributes before the client port's value, those after it); without a client port
# (always for a small set: a stage span), the flat attributes then (). The port is a new value with every
# connection (gunicorn's sync worker: every request), so it is encoded per item. The entry (_ItemEntry) is the
# message laid out around what varies: the positions of the int values in the flat attributes, a packer of the
# times after their lead (the name and kind fields, the start time's tag), the fields after the times (without a
# port: the attributes, status and flags; with one: those before the port's field and those after it), without a
# port the span's field prefix and a packer of the ids for a root and for a child (the message's size is fixed),
# and the message's size but for its ids beyond a root's and the port's field. Same rules as _block_cache (exact
# str keys, exact str or int values, a hit checks the ints' types); at most _ITEM_MAX_BYTES of attributes per
# entry; cleared when full.
_ItemEntry = tuple[
    tuple[int, ...],
    Callable[..., bytes],
    bytes,
    Any,  # bytes, or (bytes, bytes) around the port's field
    "tuple[tuple[bytes, Callable[..., bytes]], tuple[bytes, Callable[..., bytes]]] | None",
    int,
]
_SMALL_FLAT: Final = 2 * _BLOCK_MAX_ITEMS  # a flat tuple this long or shorter has no client port to leave out
_ITEM_CACHE_MAX: Final = 1024
_ITEM_MAX_BYTES: Final = 4096
_item_cache: dict[tuple[Any, ...], _ItemEntry] = {}
# Span name -> (its kind, the encoded name and kind fields); cleared when full.
_NAME_CACHE_MAX: Final = 1024
_name_cache: dict[str, tuple[SpanKind, bytes]] = {}
# A span message's length -> its tag and length prefix; cleared when full.
_PREFIX_CACHE_MAX: Final = 4096
_prefix_cache: dict[int, bytes] = {}
# id(resource or scope) -> (the object, kept alive so the id stays its own; its encoded field).
_OBJ_CACHE_MAX: Final = 64
_resource_cache: dict[int, tuple[Any, bytes]] = {}
_scope_cache: dict[int, tuple[Any, bytes]] = {}

_NO_ITEMS: Final[tuple[()]] = ()  # what obskit's lean spans hold until their first event or link
_VARINT_1: Final = tuple(bytes((i,)) for i in range(128))


def _varint(n: int) -> bytes:
    """A non-negative integer as a base-128 varint."""
    if n < 0x80:
        return _VARINT_1[n]
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if n < 0x200000:  # a client port above 16383, one per server span
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5

# ExportTraceServiceRequest / ResourceSpans / ScopeSpans
_T_RESOURCE_SPANS: Final = _tag(1, _LEN)
_T_RS_RESOURCE: Final = _tag(1, _LEN)
_T_RS_SCOPE_SPANS: Final = _tag(2, _LEN)
_T_RS_SCHEMA_URL: Final = _tag(3, _LEN)
_T_SS_SCOPE: Final = _tag(1, _LEN)
_T_SS_SPAN: Final = _tag(2, _LEN)
_T_SS_SCHEMA_URL: Final = _tag(3, _LEN)
# Resource / InstrumentationScope
_T_RESOURCE_ATTR: Final = _tag(1, _LEN)
_T_SCOPE_NAME: Final = _tag(1, _LEN)
_T_SCOPE_VERSION: Final = _tag(2, _LEN)
_T_SCOPE_ATTR: Final = _tag(3, _LEN)
# Span
_T_TRACE_ID: Final = _tag(1, _LEN) + b"\x10"  # with the length: ids are always 16 and 8 bytes
_T_SPAN_ID: Final = _tag(2, _LEN) + b"\x08"
_T_TRACE_STATE: Final = _tag(3, _LEN)
_T_PARENT_SPAN_ID: Final = _tag(4, _LEN) + b"\x08"
_T_NAME: Final = _tag(5, _LEN)
_T_START: Final = _tag(7, _FIXED64)
_T_END: Final = _tag(8, _FIXED64)
_T_START_BYTE: Final = _T_START[0]
_T_END_BYTE: Final = _T_END[0]
_T_ATTR: Final = _tag(9, _LEN)
_T_DROPPED_ATTRS: Final = _tag(10, _VARINT)
_T_EVENT: Final = _tag(11, _LEN)
_T_DROPPED_EVENTS: Final = _tag(12, _VARINT)
_T_LINK: Final = _tag(13, _LEN)
_T_DROPPED_LINKS: Final = _tag(14, _VARINT)
_T_STATUS: Final = _tag(15, _LEN)
_T_FLAGS: Final = _tag(16, _FIXED32)
# Span.Event
_T_EVENT_TIME: Final = _tag(1, _FIXED64)
_T_EVENT_NAME: Final = _tag(2, _LEN)
_T_EVENT_ATTR: Final = _tag(3, _LEN)
_T_EVENT_DROPPED: Final = _tag(4, _VARINT)
# Span.Link
_T_LINK_TRACE_ID: Final = _T_TRACE_ID
_T_LINK_SPAN_ID: Final = _T_SPAN_ID
_T_LINK_ATTR: Final = _tag(4, _LEN)
_T_LINK_DROPPED: Final = _tag(5, _VARINT)
_T_LINK_FLAGS: Final = _tag(6, _FIXED32)
# Status
_T_STATUS_MESSAGE: Final = _tag(2, _LEN)
_T_STATUS_CODE: Final = _tag(3, _VARINT)
# KeyValue / AnyValue / ArrayValue / KeyValueList
_T_KV_KEY: Final = _tag(1, _LEN)
_T_KV_VALUE: Final = _tag(2, _LEN)
_T_STRING: Final = _tag(1, _LEN)
_T_BOOL: Final = _tag(2, _VARINT)
_T_INT: Final = _tag(3, _VARINT)
_T_DOUBLE: Final = _tag(4, _FIXED64)
_T_ARRAY: Final = _tag(5, _LEN)
_T_KVLIST: Final = _tag(6, _LEN)
_T_BYTES: Final = _tag(7, _LEN)
_T_LIST_ITEM: Final = _tag(1, _LEN)  # ArrayValue.values and KeyValueList.values

# SpanFlags: the SDK always says whether the parent (or linked) context is remote.
_HAS_IS_REMOTE: Final = 0x100
_IS_REMOTE: Final = 0x200
_FLAGS_LOCAL: Final = _T_FLAGS + struct.pack("<I", _HAS_IS_REMOTE)
_FLAGS_REMOTE: Final = _T_FLAGS + struct.pack("<I", _HAS_IS_REMOTE | _IS_REMOTE)
_LINK_FLAGS_LOCAL: Final = _T_LINK_FLAGS + struct.pack("<I", _HAS_IS_REMOTE)
_LINK_FLAGS_REMOTE: Final = _T_LINK_FLAGS + struct.pack("<I", _HAS_IS_REMOTE | _IS_REMOTE)
# The sizes of a queued item's fixed-width fields (_ItemEntry): a root's ids, a parent's id, both times.
_ROOT_IDS_SIZE: Final = len(_T_TRACE_ID) + 16 + len(_T_SPAN_ID) + 8
_PARENT_FIELD_SIZE: Final = len(_T_PARENT_SPAN_ID) + 8
_TIMES_SIZE: Final = 1 + 8 + 1 + 8

# The OTLP enum is the API's value + 1 (0 is SPAN_KIND_UNSPECIFIED).
# Keyed by id(): an Enum's __hash__ is a Python call.
_KIND: Final[dict[int, bytes]] = {id(kind): _tag(6, _VARINT) + _varint(kind.value + 1) for kind in SpanKind}
# A status without description, the common case: the field is always present, even when empty (UNSET).
_STATUS_NO_MESSAGE: Final[dict[int, bytes]] = {
    id(code): _T_STATUS + (_varint(len(body)) + body)
    for code in StatusCode
    for body in [_T_STATUS_CODE + _varint(code.value) if code.value else b""]
}


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag + _varint(len(payload)) + payload


def _string(tag: bytes, value: str) -> bytes:
    data = value.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError: the SDK's encoder decides
    return tag + _varint(len(data)) + data


def _uint32(tag: bytes, value: int) -> bytes:
    if not 0 <= value <= _UINT32_MAX:
        raise UnsupportedSpanData(f"uint32 out of range: {value}")
    return tag + _varint(value)


def _any_value(value: Any) -> bytes:
    """The body of an AnyValue, with the SDK encoder's type tests in its order."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _string(_T_STRING, value)
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise UnsupportedSpanData("int outside int64")
        return _T_INT + _varint(value & _MASK64)
    if isinstance(value, float):
        return _T_DOUBLE + _pack_double(value)
    if isinstance(value, bytes):
        return _ld(_T_BYTES, value)
    if isinstance(value, Sequence):
        return _ld(_T_ARRAY, b"".join([_ld(_T_LIST_ITEM, _any_value(item)) for item in value]))
    if isinstance(value, Mapping):
        return _ld(_T_KVLIST, b"".join([_T_LIST_ITEM + _key_value(str(k), v) for k, v in value.items()]))
    raise UnsupportedSpanData(f"attribute value of type {type(value).__name__}")


def _key_value(key: str, value: Any) -> bytes:
    """A KeyValue with its length prefix (the caller writes the tag)."""
    body = (_string(_T_KV_KEY, key) if key else b"") + _ld(_T_KV_VALUE, _any_value(value))
    return _varint(len(body)) + body


def _attributes(parts: list[bytes], tag: bytes, attributes: Mapping[str, Any] | None) -> None:
    """Append one ``tag`` + KeyValue per attribute, reusing the encoding of small repeated pairs."""
    if type(attributes) is BoundedAttributes:
        attributes = attributes._dict  # its public items() makes a Python call per item
    if not attributes:
        return
    cache = _kv_caches.get(tag)
    if cache is None:
        cache = _kv_caches[tag] = {}
    append = parts.append
    for key, value in attributes.items():
        kind = type(value)
        if (kind is str and len(value) <= _KV_CACHE_MAX_STR) or kind is int or kind is bool:
            cache_key = (key, value, kind)  # with the type: True == 1
            encoded = cache.get(cache_key)
            if encoded is None:
                encoded = tag + _key_value(key, value)
                if len(cache) >= _KV_CACHE_MAX:
                    cache.clear()
                cache[cache_key] = encoded
        else:
            encoded = tag + _key_value(key, value)
        append(encoded)


def _attributes_field(tag: bytes, attributes: Mapping[str, Any]) -> bytes:
    parts: list[bytes] = []
    _attributes(parts, tag, attributes)
    return b"".join(parts)


def _cached(cache: dict[int, tuple[Any, bytes]], obj: _T, encode: Callable[[_T], bytes]) -> bytes:
    """``encode(obj)``, remembered by the object's identity (keeping it alive, so the id stays its own)."""
    cached = cache.get(id(obj))
    if cached is not None and cached[0] is obj:
        return cached[1]
    encoded = encode(obj)
    if len(cache) >= _OBJ_CACHE_MAX:
        cache.clear()
    cache[id(obj)] = (obj, encoded)
    return encoded


def _resource_field(resource: Resource) -> bytes:
    """ResourceSpans.resource: the resource's attributes (the SDK sends no dropped count)."""
    parts: list[bytes] = []
    _attributes(parts, _T_RESOURCE_ATTR, resource.attributes)
    return _ld(_T_RS_RESOURCE, b"".join(parts))


def _scope_field(scope: InstrumentationScope | None) -> bytes:
    """ScopeSpans.scope, present even when there is no scope."""
    parts: list[bytes] = []
    if scope is not None:
        if scope.name:
            parts.append(_string(_T_SCOPE_NAME, scope.name))
        if scope.version:
            parts.append(_string(_T_SCOPE_VERSION, scope.version))
        _attributes(parts, _T_SCOPE_ATTR, scope.attributes)
    return _ld(_T_SS_SCOPE, b"".join(parts))


def _trace_state(trace_state: TraceState) -> bytes:
    return _string(_T_TRACE_STATE, ",".join([f"{key}={value}" for key, value in trace_state.items()]))


def _events(parts: list[bytes], span_events: Any) -> None:
    """The events and dropped_events_count fields."""
    events, dropped = _items(span_events)
    for event in events:
        body: list[bytes] = []
        if event.timestamp:
            body.append(_T_EVENT_TIME + _pack_fixed64(event.timestamp))
        if event.name:
            body.append(_string(_T_EVENT_NAME, event.name))
        _attributes(body, _T_EVENT_ATTR, event.attributes)
        dropped_attributes = event.dropped_attributes
        if dropped_attributes:
            body.append(_uint32(_T_EVENT_DROPPED, dropped_attributes))
        parts.append(_ld(_T_EVENT, b"".join(body)))
    if dropped:
        parts.append(_uint32(_T_DROPPED_EVENTS, dropped))


def _links(parts: list[bytes], span_links: Any) -> None:
    """The links and dropped_links_count fields."""
    links, dropped = _items(span_links)
    for link in links:
        context = link.context
        body = [
            _T_LINK_TRACE_ID,
            context.trace_id.to_bytes(16, "big"),
            _T_LINK_SPAN_ID,
            context.span_id.to_bytes(8, "big"),
        ]
        _attributes(body, _T_LINK_ATTR, link.attributes)
        dropped_attributes = link.dropped_attributes
        if dropped_attributes:
            body.append(_uint32(_T_LINK_DROPPED, dropped_attributes))
        body.append(_LINK_FLAGS_REMOTE if context and context.is_remote else _LINK_FLAGS_LOCAL)
        parts.append(_ld(_T_LINK, b"".join(body)))
    if dropped:
        parts.append(_uint32(_T_DROPPED_LINKS, dropped))


def _items(items: Any) -> tuple[Sequence[Any], int]:
    """A span's events or links and their dropped count, as its ``events``/``dropped_events`` properties say."""
    if type(items) is BoundedList:
        return items._dq, items.dropped  # type: ignore[attr-defined]  # its iterator copies the deque under a lock
    if isinstance(items, BoundedList):
        return tuple(items), items.dropped
    return tuple(items), 0


# The span classes whose public accessors are plain reads of the private fields _span() reads directly (the
# properties cost a call each, and ``attributes``/``events``/``links`` wrap or copy): the SDK's ReadableSpan and
# Span, and subclasses that override none of them. Another class makes the batch go to the SDK's encoder.
_ACCESSORS: Final = (
    "name", "kind", "parent", "start_time", "end_time", "attributes", "events", "links", "status", "resource",
    "instrumentation_scope", "dropped_attributes", "dropped_events", "dropped_links",
)  # fmt: skip
_fast_classes: dict[type, bool] = {}
# get_span_context() implementations that return the _context field as it is (obskit's drops the SDK's cast()).
_PLAIN_CONTEXT_GETTERS: Final = (ReadableSpan.get_span_context, SdkSpan.get_span_context, _LeanSpan.get_span_context)


def _is_fast(cls: type) -> bool:
    fast = _fast_classes.get(cls)
    if fast is None:
        fast = _fast_classes[cls] = (
            issubclass(cls, ReadableSpan)
            and all(getattr(cls, name, None) is getattr(ReadableSpan, name) for name in _ACCESSORS)
            and cls.get_span_context in _PLAIN_CONTEXT_GETTERS
        )
    return fast


def _name_kind(name: str, kind: SpanKind) -> tuple[SpanKind, bytes]:
    """The span's name and kind fields, remembered by name."""
    encoded = (kind, (_string(_T_NAME, name) if name else b"") + _KIND[id(kind)])
    if len(_name_cache) >= _NAME_CACHE_MAX:
        _name_cache.clear()
    _name_cache[name] = encoded
    return encoded


def _span_prefix(size: int) -> bytes:
    """ScopeSpans.spans' tag and the length of a span message of ``size`` bytes, remembered."""
    prefix = _T_SS_SPAN + _varint(size)
    if len(_prefix_cache) >= _PREFIX_CACHE_MAX:
        _prefix_cache.clear()
    _prefix_cache[size] = prefix
    return prefix


def _span_pairs(pairs: Sequence[tuple[str, str | int]]) -> bytes:
    """The attribute fields of a span whose values are all exactly str or int, pair by pair through the cache."""
    cache = _span_kv_cache
    encoded = list(map(cache.get, pairs))
    if None in encoded:
        for i, pair in enumerate(pairs):
            if encoded[i] is None:
                key, value = pair
                field = encoded[i] = _T_ATTR + _key_value(key, value)
                if type(key) is str and (type(value) is int or len(value) <= _KV_CACHE_MAX_STR):  # type: ignore[arg-type]
                    if key in _PER_CONNECTION_KEYS:
                        if len(_connection_pairs) >= _CONNECTION_PAIRS_MAX:
                            for old in _connection_pairs:
                                cache.pop(old, None)
                            _connection_pairs.clear()
                        _connection_pairs.append(pair)
                    if len(cache) >= _SPAN_KV_CACHE_MAX:
                        cache.clear()
                    cache[pair] = field
    return b"".join(encoded)  # type: ignore[arg-type]  # no None left


def _plain_pairs(keys: Iterable[Any], values: Iterable[Any]) -> bool:
    """Whether attributes may go through the caches keyed by contents: keys exactly str, values exactly str or int."""
    return _STR.issuperset(map(type, keys)) and _STR_OR_INT.issuperset(map(type, values))


def _span_block(key: tuple[Any, ...], attributes: Mapping[str, Any]) -> bytes:
    """The attribute fields of a span with few attributes, remembered by ``key`` (its keys, then its values).

    Remembered only when the keys are all exactly str and the values exactly str or int (see ``_block_cache``).
    """
    if not _plain_pairs(attributes, attributes.values()):
        return _attributes_field(_T_ATTR, attributes)
    block = _span_pairs(tuple(attributes.items()))
    if len(block) <= _BLOCK_MAX_BYTES:
        ints = tuple(i for i in range(len(attributes), len(key)) if type(key[i]) is int)
        if len(_block_cache) >= _BLOCK_CACHE_MAX:
            _block_cache.clear()
        _block_cache[key] = (block, ints)
    return block


def _span_extras(dropped_attributes: int, events: Any, links: Any) -> bytes:
    """Span fields 10 to 14: the dropped attributes count, the events and links and their dropped counts."""
    parts: list[bytes] = []
    if dropped_attributes:
        parts.append(_uint32(_T_DROPPED_ATTRS, dropped_attributes))
    if events is not _NO_ITEMS:  # obskit's lean spans share one empty tuple
        _events(parts, events)
    if links is not _NO_ITEMS:
        _links(parts, links)
    return b"".join(parts)


def _status_field(status: Any) -> bytes:
    """Span.status, which the SDK always sends (empty for UNSET without a description)."""
    if status is None:
        return b""
    if type(status) is Status:
        code, description = status._status_code, status._description
    else:
        code, description = status.status_code, status.description
    if description:
        value = code.value
        body = _string(_T_STATUS_MESSAGE, description) + (_T_STATUS_CODE + _varint(value) if value else b"")
        return _ld(_T_STATUS, body)
    return _STATUS_NO_MESSAGE[id(code)]


def encode_spans(spans: Sequence[ReadableSpan | EndedSpan]) -> bytes:
    """The serialized ``ExportTraceServiceRequest`` for ``spans`` (spans, or :data:`EndedSpan` items).

    Raises :class:`UnsupportedSpanData`.
    """
    try:
        return _encode(spans)
    except UnsupportedSpanData:
        raise
    except Exception as exc:  # e.g. a non-str key, an out-of-range timestamp (struct.error), a lone surrogate
        raise UnsupportedSpanData(f"{type(exc).__name__}: {exc}") from exc


EndedSpan = tuple[Any, ...]
"""What obskit's span processor queues for an ended span instead of the span (see :func:`ended`):
``(origin, name, kind value, trace_id, span_id, parent span_id or 0, parent is remote, start, end, attribute keys
then values (one flat tuple: a tuple holding a dict is never untracked), status code value, status description)``."""

# (id(resource), id(scope)) -> origin number; the objects are kept in _origin_objects (so the ids stay theirs).
_ORIGINS_MAX: Final = 256
_origins: dict[tuple[int, int], int] = {}
_origin_objects: list[tuple[Any, Any]] = []
_scope_origins: dict[int, tuple[int, Any]] = {}  # id(scope) -> (origin number, resource)
_origins_lock = threading.Lock()
# The last status object encoded, with its status-and-flags fields (local parent, remote parent): most spans share
# the SDK's or obskit's one UNSET status. Replaced as one tuple (spans end on any thread).
_last_status: tuple[Any, tuple[bytes, bytes]] = (None, (b"", b""))
_KINDS: Final = tuple(sorted(SpanKind, key=lambda kind: kind.value))  # SpanKind by value (0..4)
# (status code value, description) -> a Status object, so that rebuilt spans share them (and _last_status hits).
_STATUSES_MAX: Final = 256
_statuses: dict[tuple[int, str | None], Status] = {}


def ended(span: ReadableSpan) -> EndedSpan | None:
    """An ended span as ints, strings and a flat attribute tuple, or None when only the span itself will do.

    obskit's span processor queues this instead of the span: the span object is freed at once, and the tuple,
    made of objects the garbage collector does not track, is untracked at its first collection. A span queued
    until its batch is exported is promoted through the collector's generations and makes full collections
    frequent (~28 ms each in a model server: the p99 latency of every request they land in). None: a span class
    whose accessors are not plain reads, events, links, a trace state, dropped attributes, or too many origins.

    Runs on the request thread for every span (four per request): the common answers are read without calls
    (lean spans share one empty events/links tuple), and enum values from ``_value_`` (Enum's ``value``
    descriptor and its ``__hash__`` are Python calls).
    A real model server spent ~3 µs per span here before (in-process, benchmarks/README.md).
    """
    fast = _fast_classes.get(type(span))
    if fast is None:
        fast = _is_fast(type(span))
    if not fast:
        return None
    plain: Any = span
    events, links = plain._events, plain._links
    if (events is not _NO_ITEMS and _holds_items(events)) or (links is not _NO_ITEMS and _holds_items(links)):
        return None
    trace_id, span_id, _, _, trace_state, _ = plain._context
    if trace_state is not DEFAULT_TRACE_STATE and trace_state:
        return None
    attributes = plain._attributes
    if type(attributes) is BoundedAttributes:
        if attributes.dropped:
            return None
        attributes = attributes._dict
    elif attributes is None:
        attributes = {}
    elif type(attributes) is not dict:
        return None
    resource = plain._resource
    scope = plain._instrumentation_scope
    known = _scope_origins.get(id(scope))
    if known is not None and known[1] is resource:
        number = known[0]
    else:
        try:
            number = origin(resource, scope)
        except UnsupportedSpanData:
            return None
    parent = plain._parent
    status = plain._status
    if type(status) is Status:
        code, description = status._status_code, status._description
    else:
        code, description = status.status_code, status.description
    return (
        number,
        plain._name,
        plain._kind._value_,
        trace_id,
        span_id,
        parent[1] if parent else 0,
        parent[2] if parent else False,
        plain._start_time,
        plain._end_time,
        (*attributes, *attributes.values()),
        code._value_,
        description,
    )


def as_readable(item: EndedSpan) -> ReadableSpan:
    """An :data:`EndedSpan` as the SDK's ``ReadableSpan`` (for the SDK's encoder, when obskit's cannot write it)."""
    from opentelemetry.trace import SpanContext

    number, name, kind, trace_id, span_id, parent_id, remote, start, end, attributes, code, description = item
    resource, scope = _origin_objects[number]
    return ReadableSpan(
        name=name,
        context=SpanContext(trace_id, span_id, False),
        parent=SpanContext(trace_id, parent_id, remote) if parent_id else None,
        resource=resource,
        attributes=_unflatten(attributes),
        kind=_KINDS[kind],
        instrumentation_scope=scope,
        status=_status_of(code, description),
        start_time=start,
        end_time=end,
    )


def origin(resource: Any, scope: Any) -> int:
    """The number of a (resource, scope) pair, registered on first sight; :data:`EndedSpan` items carry it."""
    with _origins_lock:
        key = (id(resource), id(scope))
        number = _origins.get(key)
        if number is None:
            if len(_origin_objects) >= _ORIGINS_MAX:
                raise UnsupportedSpanData("too many resources and scopes")
            number = _origins[key] = len(_origin_objects)
            _origin_objects.append((resource, scope))
            # The latest resource per scope: ended()'s lookup without building (and hashing) the pair.
            _scope_origins[key[1]] = (number, resource)
        return number


def _message(span: Any) -> bytes:
    """One span as a ``ScopeSpans.spans`` field (tag, length, ``Span``), for a span class known to be fast."""
    trace_id, span_id, _, _, trace_state, _ = span._context  # SpanContext is a 6-tuple
    parent: Any = span._parent
    attributes: Any = span._attributes
    dropped = 0
    if type(attributes) is BoundedAttributes:
        dropped = attributes.dropped
        attributes = attributes._dict  # its public items() makes a Python call per item
    elif isinstance(attributes, BoundedAttributes):
        dropped = attributes.dropped
    flat = (*attributes, *attributes.values()) if attributes and len(attributes) <= _BLOCK_MAX_ITEMS else None
    parent_id, remote = (parent[1], bool(parent[2])) if parent else (0, False)
    times = (span._start_time, span._end_time)
    return _compose(trace_id, span_id, trace_state, parent_id, remote, span._name, span._kind, *times,
                    attributes, flat, dropped, span._status, span._events, span._links)  # fmt: skip


def _ended_message(item: EndedSpan) -> bytes:
    """:func:`_message` of an :data:`EndedSpan` (no events, links, trace state or dropped attributes)."""
    _, name, kind, trace_id, span_id, parent_id, remote, start, end, flat, code, description = item
    # The export thread's main cost (four spans per request): what repeats comes from _item_cache, already laid
    # out around the ids and times; only those (and a server span's client port) are encoded per item, with two
    # struct calls. _compose takes what this cannot key.
    if start and end:
        size = len(flat)
        key: tuple[Any, ...]
        at = 0
        if size <= _SMALL_FLAT:
            key = (name, kind, remote, code, description, flat, ())
        else:
            try:  # the port's value: a new one with every connection, so it is left out of the key
                at = flat.index(_CLIENT_PORT, 0, size >> 1) + (size >> 1)
            except ValueError:
                key = (name, kind, remote, code, description, flat, ())
            else:
                key = (name, kind, remote, code, description, flat[:at], flat[at + 1 :])
        try:
            entry = _item_cache.get(key)
        except TypeError:  # an unhashable value (never in a queued item; as _compose does)
            entry = None
        else:
            if entry is None:
                entry = _item_entry(key, at)
        if entry is not None:
            ints, pack_times, times_lead, tail, fixed, base = entry
            message: bytes
            for i in ints:  # equal is not enough for an int: True == 1 == 1.0
                if type(flat[i]) is not int:
                    break
            else:
                times = pack_times(times_lead, start, _T_END_BYTE, end)
                if fixed is not None:  # no port: the whole message's size, so its prefix, is known
                    if parent_id:
                        lead, pack = fixed[1]
                        trace = trace_id.to_bytes(16, "big")
                        message = pack(lead, trace, _T_SPAN_ID, span_id, _T_PARENT_SPAN_ID, parent_id) + times + tail
                        return message
                    lead, pack = fixed[0]
                    message = pack(lead, trace_id.to_bytes(16, "big"), _T_SPAN_ID, span_id) + times + tail
                    return message
                port = flat[at]
                if type(port) is int and 0 <= port < 0x200000:
                    value = _varint(port)
                    port_field = _port_fields[len(value) - 1] + value
                    size = base + len(port_field)
                    if parent_id:
                        size += _PARENT_FIELD_SIZE
                        trace = trace_id.to_bytes(16, "big")
                        ids = _pack_ids_parent(_T_TRACE_ID, trace, _T_SPAN_ID, span_id, _T_PARENT_SPAN_ID, parent_id)
                    else:
                        ids = _pack_ids(_T_TRACE_ID, trace_id.to_bytes(16, "big"), _T_SPAN_ID, span_id)
                    prefix = _prefix_cache.get(size)
                    if prefix is None:
                        prefix = _span_prefix(size)
                    return b"".join((prefix, ids, times, tail[0], port_field, tail[1]))
    return _compose(
        trace_id,
        span_id,
        DEFAULT_TRACE_STATE,
        parent_id,
        remote,
        name,
        _KINDS[kind],
        start,
        end,
        None if len(flat) <= _SMALL_FLAT else _unflatten(flat),
        flat if len(flat) <= _SMALL_FLAT else None,
        0,
        _status_of(code, description),
        _NO_ITEMS,
        _NO_ITEMS,
    )


def _ids_packer(lead: bytes, parent: bool) -> Callable[..., bytes]:
    """A struct packer of ``lead``, the trace id's 16 bytes, the span id and (``parent``) the parent's span id.

    ``lead`` ends with the trace id's tag; each span id comes after its tag and length, passed in (a struct has no
    literals).
    """
    return struct.Struct(f">{len(lead)}s16s2sQ" + ("2sQ" if parent else "")).pack


def _item_entry(key: tuple[Any, ...], at: int) -> _ItemEntry | None:
    """The _item_cache entry of an item's repeating fields (stored), or None when they cannot be cached.

    ``at``: the position in the item's flat attributes of the client port's value (left out of the key and the
    entry), or 0.
    """
    name, kind, remote, code, description, before, after = key
    flat = (*before, 0, *after) if at else before  # 0: any int (the port is checked and encoded per item)
    half = len(flat) // 2
    if not _plain_pairs(flat[:half], flat[half:]):
        return None
    pairs = tuple(zip(flat[:half], flat[half:], strict=True))
    split = at - half if at else half
    first, rest = _span_pairs(pairs[:split]), _span_pairs(pairs[split + 1 :])
    if len(first) + len(rest) > _ITEM_MAX_BYTES:
        return None
    head = (_string(_T_NAME, name) if name else b"") + _KIND[id(_KINDS[kind])]
    status = _status_field(_status_of(code, description))
    rest += status + (_FLAGS_REMOTE if remote else _FLAGS_LOCAL)
    ints = tuple(i for i in range(half, len(flat)) if i != at and type(flat[i]) is int)
    # Everything but the span's field prefix and its ids: the ids' fields, the times' (their lead: the name and
    # kind fields, then the start time's tag), the attributes, status and flags.
    base = _ROOT_IDS_SIZE + _TIMES_SIZE + len(head) + len(first) + len(rest)
    fixed: tuple[tuple[bytes, Callable[..., bytes]], tuple[bytes, Callable[..., bytes]]] | None = None
    tail: Any
    if at:
        tail = (first, rest)
    else:
        tail = first + rest
        lead_root = _T_SS_SPAN + _varint(base) + _T_TRACE_ID
        lead_parent = _T_SS_SPAN + _varint(base + _PARENT_FIELD_SIZE) + _T_TRACE_ID
        fixed = ((lead_root, _ids_packer(lead_root, False)), (lead_parent, _ids_packer(lead_parent, True)))
    times_lead = head + _T_START
    pack_times = struct.Struct(f"<{len(times_lead)}sQBQ").pack
    entry = (ints, pack_times, times_lead, tail, fixed, base)
    if len(_item_cache) >= _ITEM_CACHE_MAX:
        _item_cache.clear()
    _item_cache[key] = entry
    return entry


# The client port's attribute field up to its value's varint, by the varint's length - 1 (ports below 2**21):
# _T_ATTR + _key_value("client.port", port) is this + _varint(port). Cut from the field of a port of each length.
_port_fields: Final = tuple(
    (_T_ATTR + _key_value(_CLIENT_PORT, port))[: -len(_varint(port))] for port in (0, 0x80, 0x4000)
)


def _status_of(code: int, description: str | None) -> Status:
    """The Status of an :data:`EndedSpan`, one object per (code, description) seen (so _last_status hits)."""
    status = _statuses.get((code, description))
    if status is None:
        status = Status(StatusCode(code), description)
        if len(_statuses) < _STATUSES_MAX:
            _statuses[(code, description)] = status
    return status


def _holds_items(items: Any) -> bool:
    """Whether a span's events or links hold anything (lean spans share one empty tuple, SDK spans a BoundedList)."""
    return items is not _NO_ITEMS and (type(items) is not BoundedList or bool(items._dq))  # type: ignore[attr-defined]


def _unflatten(flat: tuple[Any, ...]) -> dict[str, Any]:
    half = len(flat) // 2
    return dict(zip(flat[:half], flat[half:], strict=True))


def _compose(
    trace_id: int,
    span_id: int,
    trace_state: Any,
    parent_id: int,
    remote: bool,
    name: str,
    kind: SpanKind,
    start: int | None,
    end: int | None,
    attributes: Any,
    flat: tuple[Any, ...] | None,
    dropped: int,
    status: Any,
    events: Any,
    links: Any,
) -> bytes:
    """The ``ScopeSpans.spans`` field of one span from its parts.

    ``attributes``: the attribute mapping (None: rebuilt from ``flat`` when needed); ``flat``: its keys then its
    values, for at most _BLOCK_MAX_ITEMS attributes (None for more, or none).
    """
    global _last_status
    trace = trace_id.to_bytes(16, "big")
    if trace_state is not DEFAULT_TRACE_STATE and trace_state:  # the SDK writes "" (nothing) for an empty one
        ids = _pack_ids(_T_TRACE_ID, trace, _T_SPAN_ID, span_id) + _trace_state(trace_state)
        if parent_id:
            ids += _T_PARENT_SPAN_ID + parent_id.to_bytes(8, "big")
    elif parent_id:
        ids = _pack_ids_parent(_T_TRACE_ID, trace, _T_SPAN_ID, span_id, _T_PARENT_SPAN_ID, parent_id)
    else:
        ids = _pack_ids(_T_TRACE_ID, trace, _T_SPAN_ID, span_id)

    name_kind = _name_cache.get(name)
    if name_kind is None or name_kind[0] is not kind:
        name_kind = _name_kind(name, kind)

    if start and end:
        times = _pack_times(_T_START_BYTE, start, _T_END_BYTE, end)
    else:
        times = (_T_START + _pack_fixed64(start) if start else b"") + (_T_END + _pack_fixed64(end) if end else b"")

    if flat:
        # Keyed by contents: the keys then the values, flat (cheaper to build and hash than the items).
        key = flat
        try:
            entry = _block_cache.get(key)
        except TypeError:  # an unhashable value (a list in a plain ReadableSpan's attributes)
            if attributes is None:
                attributes = _unflatten(flat)
            entry = (_attributes_field(_T_ATTR, attributes), ())
        if entry is None:
            block = _span_block(key, attributes if attributes is not None else _unflatten(flat))
        else:
            block, ints = entry
            if ints:  # equal is not enough for an int: True == 1 == 1.0
                for i in ints:
                    if type(key[i]) is not int:
                        if attributes is None:
                            attributes = _unflatten(flat)
                        block = _attributes_field(_T_ATTR, attributes)
                        break
    elif not attributes:
        block = b""
    elif _STR_OR_INT.issuperset(map(type, attributes.values())):
        try:
            block = b"".join(map(_span_kv_cache.__getitem__, attributes.items()))
        except KeyError:
            block = _span_pairs(tuple(attributes.items()))
    else:
        block = _attributes_field(_T_ATTR, attributes)

    last = _last_status
    if last[0] is status:
        status_flags = last[1]
    else:
        status_field = _status_field(status)
        status_flags = (status_field + _FLAGS_LOCAL, status_field + _FLAGS_REMOTE)
        _last_status = (status, status_flags)
    tail = status_flags[1] if remote else status_flags[0]
    # (the identity tests first: the queued tuples' spans, most of them, then make no call here)
    if (
        dropped
        or (events is not _NO_ITEMS and _holds_items(events))
        or (links is not _NO_ITEMS and _holds_items(links))
    ):
        tail = _span_extras(dropped, events, links) + tail

    body = b"".join((ids, name_kind[1], times, block, tail))
    size = len(body)
    prefix = _prefix_cache.get(size)
    if prefix is None:
        prefix = _span_prefix(size)
    return prefix + body


def _encode(items: Sequence[Any]) -> bytes:
    # resource -> scope -> the scope's encoded spans, after a placeholder for its scope field. The SDK groups by
    # equality (a dict keyed by the objects), which costs a hash of the resource's attributes; by identity first,
    # the equality lookup happens once per distinct object.
    groups: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
    by_identity: dict[int, dict[int, list[bytes]]] = {}  # id(resource) -> id(scope) -> encoded spans
    scopes_by_id: dict[int, list[bytes]] = {}
    encoded: list[bytes] = []
    last_class: type | None = None
    last_resource: Any = by_identity  # nothing a span holds
    last_scope: Any = by_identity
    resource: Any
    scope: Any
    by_origin: dict[int, list[bytes]] = {}  # an EndedSpan's origin number -> its scope's encoded spans
    for item in items:
        if type(item) is tuple:  # an EndedSpan
            found = by_origin.get(item[0])
            if found is None:
                resource, scope = _origin_objects[item[0]]
                found = by_identity.setdefault(id(resource), {}).get(id(scope))
                if found is None:
                    found = groups.setdefault(resource, {}).setdefault(scope or None, [b""])
                    by_identity[id(resource)][id(scope)] = found
                by_origin[item[0]] = found
            found.append(_ended_message(item))
            continue
        span: Any = item
        span_class = type(span)
        if span_class is not last_class:
            if not _is_fast(span_class):
                raise UnsupportedSpanData(f"span class {span_class.__name__}")
            last_class = span_class
        resource, scope, message = span._resource, span._instrumentation_scope, _message(span)
        if scope is not last_scope or resource is not last_resource:
            if resource is not last_resource:
                scopes_by_id = by_identity.setdefault(id(resource), {})
                last_resource = resource
            found = scopes_by_id.get(id(scope))
            if found is None:
                found = scopes_by_id[id(scope)] = groups.setdefault(resource, {}).setdefault(scope or None, [b""])
            encoded = found
            last_scope = scope
        encoded.append(message)

    out: list[bytes] = []
    for resource, scopes in groups.items():
        resource_at = len(out)
        out.append(b"")  # the ResourceSpans tag and length, once known
        out.append(_cached(_resource_cache, resource, _resource_field))
        for scope, encoded in scopes.items():
            encoded[0] = _cached(_scope_cache, scope, _scope_field)
            if scope is not None and scope.schema_url:
                encoded.append(_string(_T_SS_SCHEMA_URL, scope.schema_url))
            scope_spans = b"".join(encoded)
            out.append(_T_RS_SCOPE_SPANS + _varint(len(scope_spans)))
            out.append(scope_spans)
        if resource.schema_url:
            out.append(_string(_T_RS_SCHEMA_URL, resource.schema_url))
        out[resource_at] = _T_RESOURCE_SPANS + _varint(sum(map(len, out[resource_at + 1 :])))
    return b"".join(out)
