"""obskit's direct OTLP trace encoder: byte-identical to the SDK's encoder, its fallback, and the real pipeline."""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

import obskit
from obskit import _otlp_trace
from obskit._buffer import _span_payload
from obskit._otlp_trace import UnsupportedSpanData, as_readable, encode_spans, ended
from obskit._receiver import _attrs as decoded_attributes
from obskit.testing import OtlpReceiver


class Color(enum.IntEnum):
    RED = 7


class Mode(enum.StrEnum):
    FAST = "fast"


# Every kind of attribute value a span can hold after the SDK's cleaning.
VALUES: dict[str, Any] = {
    "str": "fraud-xgb",
    "empty_str": "",
    "unicode": "héllo ☃ 𝄞 日本",
    "long_str": "x" * 300,  # past the pair cache's length limit
    "longer_str": "y" * 20_000,  # a 3-byte length varint
    "true": True,
    "false": False,
    "zero": 0,
    "one": 1,
    "negative": -1,
    "int64_max": 2**63 - 1,
    "int64_min": -(2**63),
    "large": 2**40 + 3,
    "int_enum": Color.RED,
    "str_enum": Mode.FAST,
    "float": 0.25,
    "negative_zero": -0.0,
    "inf": math.inf,
    "negative_inf": -math.inf,
    "nan": math.nan,
    "bytes": b"\x00\xff\x80",
    "empty_bytes": b"",
    "ints": [1, -2, 2**62],
    "strs": ["a", "", "ü"],
    "bools": [True, False],
    "floats": [1.5, math.nan, -math.inf],
    "empty_list": [],
    "none": None,
    "mixed": [1, "a", None, 2.5, [True, b"z"]],
    "mapping": {"k": 1, "nested": {"a": ["x", 2]}, "empty": {}},
}
REMOTE = SpanContext(
    trace_id=0xF0E1D2C3B4A5968778695A4B3C2D1E0F,
    span_id=0x0123456789ABCDEF,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "v1"), ("other", "x-y")]),
)
LOCAL_LINK = SpanContext(trace_id=5, span_id=6, is_remote=False)


class Recorder:
    """A TracerProvider that keeps its ended spans in memory."""

    def __init__(self, resource: Resource | None = None, limits: SpanLimits | None = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(
            resource=resource or Resource.create({"service.name": "enc"}), span_limits=limits
        )
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def tracer(self, name: str = "obskit.test", version: str | None = None, **kwargs: Any) -> trace.Tracer:
        return self.provider.get_tracer(name, version, **kwargs)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


def sdk_bytes(spans: Sequence[ReadableSpan]) -> bytes:
    return bytes(sdk_encode_spans(spans).SerializeToString())


def assert_identical(spans: Sequence[ReadableSpan]) -> bytes:
    """obskit's encoding of ``spans`` equals the SDK's, byte for byte (twice: with cold and with warm caches)."""
    expected = sdk_bytes(spans)
    assert encode_spans(spans) == expected
    assert encode_spans(spans) == expected
    return expected


def same(a: Any, b: Any) -> bool:
    """Equality in which NaN equals NaN and sequences compare as lists."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, Sequence) and not isinstance(a, (str, bytes)):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return (type(a) is type(b) and a == b) or (isinstance(a, enum.Enum) and a.value == b)


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture(autouse=True)
def _cold_caches() -> None:
    """Each test starts with obskit's encoder caches empty, so a cache hit cannot hide a wrong first encoding."""
    _otlp_trace._kv_caches.clear()
    _otlp_trace._span_kv_cache.clear()
    _otlp_trace._block_cache.clear()
    _otlp_trace._item_cache.clear()
    _otlp_trace._connection_pairs.clear()
    _otlp_trace._name_cache.clear()
    _otlp_trace._prefix_cache.clear()
    _otlp_trace._resource_cache.clear()
    _otlp_trace._scope_cache.clear()


# ---------------------------------------------------------------------------------------------------------------
# Byte identity with the SDK's encoder.


def test_empty_batch_is_an_empty_request() -> None:
    assert encode_spans([]) == sdk_bytes([]) == b""


@pytest.mark.parametrize("key", list(VALUES))
def test_each_attribute_value_kind(rec: Recorder, key: str) -> None:
    """One span per value kind, as a span, event, link and scope attribute."""
    value = VALUES[key]
    with rec.tracer(attributes={key: value}).start_as_current_span(
        f"value {key}", attributes={key: value}, links=[Link(LOCAL_LINK, {key: value})]
    ) as span:
        span.add_event("e", {key: value})
    spans = rec.spans()
    assert len(spans) == 1
    assert_identical(spans)


def test_all_attribute_kinds_in_one_span_decode_to_the_values(rec: Recorder) -> None:
    with rec.tracer().start_as_current_span("all", attributes=VALUES):
        pass
    (span,) = rec.spans()
    request = ExportTraceServiceRequest.FromString(assert_identical([span]))
    (decoded,) = request.resource_spans[0].scope_spans[0].spans
    attributes = decoded_attributes(decoded.attributes)
    assert list(attributes) == list(VALUES)
    mismatched = [k for k, v in VALUES.items() if not same(v, attributes[k])]
    assert mismatched == []
    assert math.copysign(1.0, attributes["negative_zero"]) == -1.0


def test_bool_and_int_of_equal_value_stay_distinct(rec: Recorder) -> None:
    """True == 1 and hash(True) == hash(1): the pair cache must not serve one for the other."""
    tracer = rec.tracer()
    for value in (True, 1, 1.0, False, 0, "1"):
        with tracer.start_as_current_span("eq", attributes={"x": value}):
            pass
    request = ExportTraceServiceRequest.FromString(assert_identical(rec.spans()))
    decoded = [decoded_attributes(s.attributes)["x"] for s in request.resource_spans[0].scope_spans[0].spans]
    assert [type(v) for v in decoded] == [bool, int, float, bool, int, str]


def test_every_kind_and_status(rec: Recorder) -> None:
    tracer = rec.tracer()
    statuses = [
        None,
        Status(StatusCode.OK),
        Status(StatusCode.ERROR),
        Status(StatusCode.ERROR, "model exploded: ünïcode"),
        Status(StatusCode.UNSET),
    ]
    for kind in SpanKind:
        for status in statuses:
            with tracer.start_as_current_span(f"{kind.name} {status}", kind=kind) as span:
                if status is not None:
                    span.set_status(status)
    with (
        pytest.raises(ValueError, match="bad input"),
        tracer.start_as_current_span("raises"),
    ):  # error status, exception event
        raise ValueError("bad input")
    spans = rec.spans()
    assert len(spans) == len(SpanKind) * len(statuses) + 1
    request = ExportTraceServiceRequest.FromString(assert_identical(spans))
    decoded = request.resource_spans[0].scope_spans[0].spans
    assert [s.kind for s in decoded][: len(statuses) + 1] == [1] * len(statuses) + [2]  # INTERNAL, then SERVER
    assert decoded[-1].status.message == "ValueError: bad input"
    assert decoded[-1].events[0].name == "exception"


def test_parents_trace_state_and_flags(rec: Recorder) -> None:
    """Root, local child, child of a remote parent (inheriting its trace state): parent ids and the flag bits."""
    tracer = rec.tracer()
    with tracer.start_as_current_span("root"), tracer.start_as_current_span("local child"):
        pass
    with tracer.start_as_current_span("remote child", context=trace.set_span_in_context(NonRecordingSpan(REMOTE))):
        pass
    spans = {s.name: s for s in rec.spans()}
    request = ExportTraceServiceRequest.FromString(assert_identical(list(spans.values())))
    decoded = {s.name: s for s in request.resource_spans[0].scope_spans[0].spans}
    assert decoded["root"].parent_span_id == b""
    assert decoded["root"].flags == 0x100
    assert decoded["local child"].parent_span_id == decoded["root"].span_id
    assert decoded["local child"].flags == 0x100
    assert decoded["remote child"].parent_span_id == REMOTE.span_id.to_bytes(8, "big")
    assert decoded["remote child"].trace_id == REMOTE.trace_id.to_bytes(16, "big")
    assert decoded["remote child"].trace_state == "vendor=v1,other=x-y"
    assert decoded["remote child"].flags == 0x300


def test_events_and_links(rec: Recorder) -> None:
    tracer = rec.tracer()
    links = [
        Link(REMOTE, {"link.kind": "follows", "n": 3}),  # a trace_state the SDK's encoder does not send
        Link(LOCAL_LINK),
        Link(SpanContext(trace_id=0, span_id=0, is_remote=False), {"only": "attributes"}),  # invalid, kept
    ]
    with tracer.start_as_current_span("with links and events", links=links) as span:
        span.add_event("no attributes")
        span.add_event("attributes", {"model.stage": "inference", "scores": [0.1, 0.9]})
        span.add_event("", {"unnamed": True}, timestamp=0)
        span.add_event("explicit time", timestamp=1_700_000_000_123_456_789)
    (span_data,) = rec.spans()
    request = ExportTraceServiceRequest.FromString(assert_identical([span_data]))
    (decoded,) = request.resource_spans[0].scope_spans[0].spans
    assert [e.name for e in decoded.events] == ["no attributes", "attributes", "", "explicit time"]
    assert decoded.events[2].time_unix_nano == 0
    assert [link.flags for link in decoded.links] == [0x300, 0x100, 0x100]
    assert decoded.links[0].trace_state == ""
    assert {kv.key for kv in decoded.links[0].attributes} == {"link.kind", "n"}


def test_dropped_counts_and_truncation_from_limits() -> None:
    limits = SpanLimits(
        max_span_attributes=2,
        max_events=2,
        max_links=1,
        max_event_attributes=1,
        max_link_attributes=1,
        max_span_attribute_length=4,
    )
    rec = Recorder(limits=limits)
    links = [Link(REMOTE), Link(LOCAL_LINK, {"a": 1, "b": 2})]  # the newest link is kept
    with rec.tracer().start_as_current_span("limited", attributes={"a": "long value", "b": 2}, links=links) as span:
        span.set_attributes({"c": 3, "d": [1, 2, 3]})
        for i in range(4):
            span.add_event(f"e{i}", {"x": i, "y": i})
    (span_data,) = rec.spans()
    request = ExportTraceServiceRequest.FromString(assert_identical([span_data]))
    (decoded,) = request.resource_spans[0].scope_spans[0].spans
    assert (decoded.dropped_attributes_count, decoded.dropped_events_count, decoded.dropped_links_count) == (2, 2, 1)
    assert decoded.events[0].dropped_attributes_count == 1
    assert decoded.links[0].dropped_attributes_count == 1


def test_explicit_and_extreme_timestamps(rec: Recorder) -> None:
    tracer = rec.tracer()
    tracer.start_span("zero start", start_time=0).end(end_time=5)
    tracer.start_span("max end", start_time=1).end(end_time=2**64 - 1)
    assert_identical(rec.spans())


def test_grouping_by_resource_then_scope_in_first_seen_order() -> None:
    """Several resources and scopes, interleaved; equal resources/scopes that are distinct objects group together."""
    first = Recorder(Resource({"service.name": "a", "n": 1}, schema_url="https://opentelemetry.io/schemas/1.21.0"))
    second = Recorder(Resource({"service.name": "b"}))
    twin = Recorder(Resource({"service.name": "a", "n": 1}, schema_url="https://opentelemetry.io/schemas/1.21.0"))
    assert twin.provider.resource == first.provider.resource
    assert twin.provider.resource is not first.provider.resource
    scoped = first.tracer("scope.one", "1.0", schema_url="https://scope/schema", attributes={"scope.attr": True})
    plain = first.tracer("scope.two")
    other = second.tracer("", None)
    twin_scope = twin.tracer("scope.one", "1.0", schema_url="https://scope/schema", attributes={"scope.attr": True})
    for tracer, name in [(plain, "1"), (other, "2"), (scoped, "3"), (twin_scope, "4"), (plain, "5"), (other, "6")]:
        tracer.start_span(name).end()
    spans = sorted(first.spans() + second.spans() + twin.spans(), key=lambda s: int(s.name))
    request = ExportTraceServiceRequest.FromString(assert_identical(spans))
    layout = [
        [(scope.scope.name, [s.name for s in scope.spans]) for scope in resource.scope_spans]
        for resource in request.resource_spans
    ]
    assert layout == [[("scope.two", ["1", "5"]), ("scope.one", ["3", "4"])], [("", ["2", "6"])]]
    assert request.resource_spans[0].schema_url == "https://opentelemetry.io/schemas/1.21.0"
    assert request.resource_spans[0].scope_spans[1].schema_url == "https://scope/schema"


def test_a_span_without_resource_attributes_scope_or_times() -> None:
    """A bare ReadableSpan: plain dict attributes, list events, no scope, unset times, no context state."""
    span = ReadableSpan(
        name="bare",
        context=SpanContext(trace_id=1, span_id=2, is_remote=False),
        attributes={"k": "v", "n": None},
        events=[Event("e", {"a": 1}, timestamp=3)],
    )
    request = ExportTraceServiceRequest.FromString(assert_identical([span]))
    scope_spans = request.resource_spans[0].scope_spans[0]
    assert scope_spans.HasField("scope")
    assert scope_spans.scope.name == ""
    assert scope_spans.spans[0].start_time_unix_nano == 0


def test_a_large_batch_past_the_caches_bounds(rec: Recorder) -> None:
    """More distinct pairs and names than the caches hold: they are cleared, and the output stays identical."""
    tracer = rec.tracer()
    count = 2 * _otlp_trace._KV_CACHE_MAX // 3 + 1
    for i in range(count):
        with tracer.start_as_current_span(f"span {i}", attributes={"i": i, "s": str(i), "b": i % 2 == 0}):
            pass
    spans = rec.spans()
    assert_identical(spans)
    assert all(len(cache) <= _otlp_trace._KV_CACHE_MAX for cache in _otlp_trace._kv_caches.values())
    assert len(_otlp_trace._name_cache) <= _otlp_trace._NAME_CACHE_MAX
    assert len(_otlp_trace._block_cache) <= _otlp_trace._BLOCK_CACHE_MAX
    assert len(_otlp_trace._span_kv_cache) <= _otlp_trace._SPAN_KV_CACHE_MAX


def test_large_attribute_sets_past_the_pair_cache_bound(rec: Recorder) -> None:
    """Span attribute sets past the block cache's size, with more distinct pairs than the pair cache holds."""
    tracer = rec.tracer()
    size = _otlp_trace._BLOCK_MAX_ITEMS + 1
    for i in range(_otlp_trace._SPAN_KV_CACHE_MAX // size + 2):
        with tracer.start_as_current_span("wide", attributes={f"k{j}": f"{i}.{j}" for j in range(size)}):
            pass
    assert_identical(rec.spans())
    assert 0 < len(_otlp_trace._span_kv_cache) <= _otlp_trace._SPAN_KV_CACHE_MAX


def _bare(name: str, attributes: Any, span_id: int = 2) -> ReadableSpan:
    return ReadableSpan(
        name=name,
        context=SpanContext(trace_id=1, span_id=span_id, is_remote=False),
        attributes=attributes,
        start_time=10,
        end_time=20,
    )


def test_attribute_sets_are_remembered_by_contents_not_identity() -> None:
    """Equal contents in different dict objects share one cache entry; a dict changed between batches is re-encoded."""
    first = _bare("a", {"model.name": "m", "model.stage": "inference", "model.batch_size": 32})
    twin = _bare("b", {"model.name": "m", "model.stage": "inference", "model.batch_size": 32}, span_id=3)
    assert_identical([first, twin])
    assert len(_otlp_trace._block_cache) == 1

    attributes: dict[str, Any] = {"model.name": "m", "model.stage": "preprocess"}
    span = _bare("mutable", attributes)
    before = assert_identical([span])
    attributes["model.stage"] = "postprocess"
    after = assert_identical([span])
    assert after != before
    attributes["model.batch_size"] = 8
    assert assert_identical([span]) != after
    del attributes["model.batch_size"]
    assert assert_identical([span]) == after


@pytest.mark.parametrize("size", [1, 12], ids=["block cache", "pair cache"])
def test_equal_values_of_other_types_are_not_served_a_cached_int(size: int) -> None:
    """An int's attribute set cached first, then the same contents with True, 1.0, an IntEnum or a str subclass."""
    padding = {f"pad{i}": f"v{i}" for i in range(size - 1)}
    spans = [
        _bare(type(value).__name__, {**padding, "n": value}, span_id=i + 2)
        for i, value in enumerate([1, True, 1.0, Color.RED, 7, 7.0, "fast", Mode.FAST, 0, False, -0.0, 0.0])
    ]
    for span in spans:
        assert_identical([span])  # one batch each: every later span meets the earlier ones' cached encodings
    request = ExportTraceServiceRequest.FromString(assert_identical(spans))
    decoded = [decoded_attributes(s.attributes)["n"] for s in request.resource_spans[0].scope_spans[0].spans]
    assert [type(v) for v in decoded] == [int, bool, float, int, int, float, str, str, int, bool, float, float]
    assert math.copysign(1.0, decoded[10]) == -1.0


def test_the_block_cache_is_bounded_and_skips_what_it_cannot_key() -> None:
    """More distinct small attribute sets than the cache holds; unhashable, long and non-str-keyed sets."""
    count = _otlp_trace._BLOCK_CACHE_MAX + 10
    spans = [_bare(f"s{i}", {"i": i, "stage": "inference"}, span_id=i + 2) for i in range(count)]
    assert_identical(spans)
    assert len(_otlp_trace._block_cache) <= _otlp_trace._BLOCK_CACHE_MAX
    _otlp_trace._block_cache.clear()
    odd = [
        _bare("unhashable", {"list": [1, 2], "ok": "x"}),  # a plain ReadableSpan's attributes are not cleaned
        _bare("long", {"long": "x" * 2000}),
        _bare("floats", {"f": 0.5, "g": -0.0}),
        _bare("bools", {"b": True}),
    ]
    assert_identical(odd)
    assert list(_otlp_trace._block_cache) == []


def test_obskit_stage_spans_share_one_entry_per_stage() -> None:
    """Spans from obskit's lean provider with a stage's read-only attribute view: one cached block per stage."""
    from types import MappingProxyType

    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from obskit._tracer import GuardedSpanProcessors, LeanTracerProvider

    exporter = InMemorySpanExporter()
    provider = LeanTracerProvider(
        resource=Resource.create({"service.name": "enc"}),
        shutdown_on_exit=False,
        active_span_processor=GuardedSpanProcessors(),
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("obskit", "1.0")
    stages = {
        stage: MappingProxyType({"model.name": "m", "model.version": "3", "model.stage": stage})
        for stage in ("preprocess", "inference", "postprocess")
    }
    for port in (40000, 40001, 40002):
        server: Any = tracer.start_span(
            "POST /p",
            kind=SpanKind.SERVER,
            attributes={
                **{f"http.k{i}": "v" for i in range(10)},
                "client.port": port,
            },
        )
        with trace.use_span(server, end_on_exit=True):
            for stage, attributes in stages.items():
                tracer.start_span(f"{stage} m", attributes=attributes).end()
    spans = list(exporter.get_finished_spans())
    assert type(spans[0]).__name__ == "_LeanSpan"
    assert_identical(spans)
    assert len(_otlp_trace._block_cache) == len(stages)


def test_caches_survive_across_batches(rec: Recorder) -> None:
    """Warm caches from one batch give the same bytes for the next, and a new resource is not served an old one."""
    tracer = rec.tracer()
    for stage in ("preprocess", "inference", "postprocess"):
        with tracer.start_as_current_span(stage, attributes={"model.name": "m", "model.stage": stage}):
            pass
    assert_identical(rec.spans())
    other = Recorder(Resource({"service.name": "another"}))
    with other.tracer().start_as_current_span("inference", attributes={"model.name": "m"}):
        pass
    assert_identical(other.spans())
    assert_identical(rec.spans() + other.spans())


def test_spans_from_obskits_own_tracer_provider() -> None:
    """Spans as the provider obskit.init() installs makes them (its span class, its resource) take the fast path."""
    from obskit import testing

    with testing.capture_telemetry() as capture:
        tracer = trace.get_tracer("obskit.test.capture", "1.0")
        with tracer.start_as_current_span("request", kind=SpanKind.SERVER, attributes={"http.route": "/p"}) as root:
            root.add_event("accepted", {"queue.depth": 3})
            with tracer.start_as_current_span("inference m", attributes={"model.name": "m", "model.batch": [1, 2]}):
                pass
            with tracer.start_as_current_span("linked", links=[Link(REMOTE, {"why": "batch"})]) as linked:
                linked.set_status(Status(StatusCode.ERROR, "late"))
        spans = capture.spans()
    assert [s.name for s in spans] == ["inference m", "linked", "request"]
    assert_identical(spans)


# ---------------------------------------------------------------------------------------------------------------
# What obskit's encoder does not write: the SDK's encoder takes the batch.


class RedactingSpan(ReadableSpan):
    """A span class that changes what a public accessor returns: its private fields are not what is sent."""

    @property
    def attributes(self) -> Mapping[str, Any]:
        return {"redacted": True}


def _unsupported_spans(rec: Recorder) -> list[tuple[str, list[ReadableSpan]]]:
    tracer = rec.tracer()
    with tracer.start_as_current_span("fine", attributes={"ok": 1}):
        pass
    fine = rec.spans()
    context = SpanContext(trace_id=1, span_id=2, is_remote=False)
    unknown: Any = {"obj": object(), "ok": 1}  # a plain dict is not cleaned by ReadableSpan
    return [
        ("int beyond int64", [*fine, ReadableSpan("big", context, attributes={"big": 2**64, "ok": 1})]),
        ("unencodable str", [*fine, ReadableSpan("surrogate", context, attributes={"bad": "\ud800", "ok": 1})]),
        ("unknown type", [*fine, ReadableSpan("object", context, attributes=unknown)]),
        ("overridden accessor", [*fine, RedactingSpan("redacting", context, attributes={"secret": "s"})]),
    ]


@pytest.mark.parametrize("case", ["int beyond int64", "unencodable str", "unknown type", "overridden accessor"])
def test_unsupported_data_falls_back_to_the_sdk_encoder(
    rec: Recorder, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    spans = dict(_unsupported_spans(rec))[case]
    with pytest.raises(UnsupportedSpanData):
        encode_spans(spans)
    with caplog.at_level(logging.ERROR):
        payload = _span_payload(spans)
    assert payload == sdk_bytes(spans)
    decoded = ExportTraceServiceRequest.FromString(payload)
    names = [s.name for rs in decoded.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert names == [s.name for s in spans]
    last = decoded.resource_spans[-1].scope_spans[-1].spans[-1]
    if case == "overridden accessor":
        assert [kv.key for kv in last.attributes] == ["redacted"]
    else:  # the SDK's encoder logs the value it cannot encode and skips that attribute
        assert [kv.key for kv in last.attributes] == ["ok"]
        assert any("Failed to encode key" in r.getMessage() for r in caplog.records)


def test_the_buffer_uses_obskits_encoder_when_it_can(rec: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    def sdk_must_not_run(spans: Sequence[ReadableSpan]) -> Any:
        raise AssertionError("the SDK's encoder was used")

    monkeypatch.setattr("opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans", sdk_must_not_run)
    with rec.tracer().start_as_current_span("fast", attributes=VALUES):
        pass
    assert _span_payload(rec.spans()) == encode_spans(rec.spans())


# ---------------------------------------------------------------------------------------------------------------
# Ended spans as obskit's span processor queues them: tuples the garbage collector does not track.


def test_ended_spans_make_the_same_request(rec: Recorder) -> None:
    """Spans queued as EndedSpan tuples, alone or mixed with spans, encode to the SDK's bytes for those spans."""
    other = Recorder(Resource.create({"service.name": "other"}))
    for recorder, scope in ((rec, "a"), (other, "b"), (rec, "b"), (rec, "a")):
        tracer = recorder.tracer(scope)
        with tracer.start_as_current_span("parent", kind=SpanKind.SERVER, attributes=VALUES) as parent:
            parent.set_status(Status(StatusCode.ERROR, "boom"))
            with tracer.start_as_current_span("child", attributes={"model.name": "m", "n": 3}):
                pass
    remote = SpanContext(REMOTE.trace_id, REMOTE.span_id, is_remote=True, trace_flags=TraceFlags(1))  # no state
    with rec.tracer().start_as_current_span(
        "remote child", context=trace.set_span_in_context(NonRecordingSpan(remote))
    ):
        pass
    spans = sorted([*rec.spans(), *other.spans()], key=lambda s: s.start_time or 0)
    items = [ended(s) for s in spans]
    assert [s.name for s, item in zip(spans, items, strict=True) if type(item) is not tuple] == []
    expected = sdk_bytes(spans)
    assert encode_spans(items) == expected  # type: ignore[arg-type]
    mixed = [item if i % 2 else span for i, (item, span) in enumerate(zip(items, spans, strict=True))]
    assert encode_spans(mixed) == expected
    assert _span_payload(mixed) == expected


def test_ended_items_share_their_repeating_fields_but_never_across_types(rec: Recorder) -> None:
    """Queued items of one stage encode from _item_cache; equal values of other types, statuses and parents don't
    share an entry, and an item whose values cannot be keyed takes _compose's path."""
    tracer = rec.tracer()
    remote = SpanContext(REMOTE.trace_id, REMOTE.span_id, is_remote=True, trace_flags=TraceFlags(1))
    values = [1, True, 1.0, Color.RED, 7, 7.0, "fast", Mode.FAST, 0, False, -0.0, 0.0, 1, 7]
    with tracer.start_as_current_span("request", kind=SpanKind.SERVER):
        for value in values:
            with tracer.start_as_current_span("stage", attributes={"model.name": "m", "n": value}):
                pass
        for _ in range(2):
            with tracer.start_as_current_span("failing", attributes={"model.name": "m"}) as span:
                span.set_status(Status(StatusCode.ERROR, "ValueError: bad"))
            with tracer.start_as_current_span("stage", attributes={"model.name": "m", "n": 1}) as span:
                span.set_status(Status(StatusCode.ERROR, "other"))
    for port in (40000, 40001, 40000, True, 1.0):
        with tracer.start_as_current_span(
            "stage", context=trace.set_span_in_context(NonRecordingSpan(remote)), attributes={"model.name": "m"}
        ):
            pass
        with tracer.start_as_current_span("stage", attributes={"model.name": "m"}):  # a root
            pass
        # A server span's attribute set, larger than _BLOCK_MAX_ITEMS: one _item_cache entry, the port per item.
        server = {f"k{i}": f"v{i}" for i in range(_otlp_trace._BLOCK_MAX_ITEMS)} | {"client.port": port, "n": 1}
        with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER, attributes=server):
            pass
        with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER):  # no attributes: the same key
            pass
    spans = rec.spans()
    items = [ended(s) for s in spans]
    assert all(type(item) is tuple for item in items)
    for span, item in zip(spans, items, strict=True):  # one batch each: later items meet earlier entries
        assert encode_spans([item]) == sdk_bytes([span])  # type: ignore[list-item]
    assert encode_spans(items) == sdk_bytes(spans)  # type: ignore[arg-type]
    assert encode_spans(items) == sdk_bytes(spans)  # type: ignore[arg-type]  # from warm caches
    # One entry per distinct (name, kind, parent, status, contents) whose values are exactly str or int: True,
    # 1.0, enums and str subclasses are never keyed (they meet 1's, 7's and "fast"'s entries and take _compose's
    # path). A remote parent and a root: two entries of the same contents.
    # The server span: one entry for all its ports (True and 1.0 take _compose's path), none of them cached;
    # without attributes, another.
    server_keys = [key for key in _otlp_trace._item_cache if key[0] == "GET /x"]
    assert [key[1:5] for key in server_keys] == [(SpanKind.SERVER.value, False, 0, None)] * 2
    assert [key[5] for key in server_keys if key[6] == ()] == [()]
    cached = [key for key, _value in _otlp_trace._span_kv_cache]
    assert {"k0", "n"} <= set(cached)
    assert "client.port" not in cached
    keys = sorted(repr(key[2:]) for key in _otlp_trace._item_cache if key[0] == "stage")
    expected = [(False, 0, None, ("model.name", "n", "m", v), ()) for v in (1, 7, "fast", 0)]
    expected += [(False, 2, "other", ("model.name", "n", "m", 1), ()), (True, 0, None, ("model.name", "m"), ())]
    assert keys == sorted(repr(key) for key in [*expected, (False, 0, None, ("model.name", "m"), ())])


def test_a_new_client_port_per_request_neither_fills_nor_clears_the_caches(rec: Recorder) -> None:
    """Without keep-alive every request has a new client port: a queued item's port is encoded per item (one
    _item_cache entry for all), a span's goes through the pair cache, where at most _CONNECTION_PAIRS_MAX ports
    stay cached; the pairs that repeat stay."""
    tracer = rec.tracer()
    count = _otlp_trace._SPAN_KV_CACHE_MAX + 100
    attributes = {f"k{i}": f"v{i}" for i in range(_otlp_trace._BLOCK_MAX_ITEMS)}
    for port in range(count):
        with tracer.start_as_current_span(
            "GET /x", kind=SpanKind.SERVER, attributes={**attributes, "client.port": port}
        ):
            pass
    spans = rec.spans()
    items = [ended(s) for s in spans]
    assert encode_spans(items[:10]) == sdk_bytes(spans[:10])  # type: ignore[arg-type]
    kept = dict(_otlp_trace._span_kv_cache)  # (key, value) -> its encoded field
    encode_spans(items)  # type: ignore[arg-type]
    assert encode_spans(items[-10:]) == sdk_bytes(spans[-10:])  # type: ignore[arg-type]
    assert len(_otlp_trace._item_cache) == 1
    assert [value for key, value in _otlp_trace._span_kv_cache if key == "client.port"] == []
    assert encode_spans(spans) == sdk_bytes(spans)  # the spans themselves: pair by pair
    ports = [value for key, value in _otlp_trace._span_kv_cache if key == "client.port"]
    assert 0 < len(ports) <= _otlp_trace._CONNECTION_PAIRS_MAX
    assert max(ports) == count - 1  # the latest ones
    # Never cleared: the repeating pairs cached by the first ten items are the same objects.
    assert all(_otlp_trace._span_kv_cache.get(pair) is kept[pair] for pair in attributes.items())


def test_an_item_with_attributes_past_the_entry_bound_is_encoded_without_an_entry(rec: Recorder) -> None:
    """Attributes longer than _ITEM_MAX_BYTES in all are not kept in _item_cache, and still encode as the SDK's."""
    tracer = rec.tracer()
    attributes = {f"k{i}": "v" * 200 for i in range(_otlp_trace._ITEM_MAX_BYTES // 200 + 1)}
    for port in (40000, 40001):
        with tracer.start_as_current_span(
            "GET /x", kind=SpanKind.SERVER, attributes={**attributes, "client.port": port}
        ):
            pass
    spans = rec.spans()
    items = [ended(s) for s in spans]
    assert encode_spans(items) == sdk_bytes(spans)  # type: ignore[arg-type]
    assert _otlp_trace._item_cache == {}


@pytest.mark.parametrize("position", ["first", "middle", "last", "absent"])
def test_a_server_span_item_encodes_its_client_port_per_item(rec: Recorder, position: str) -> None:
    """Every port varint length, values no port has (out of range, negative, bool, float, str) and the port
    anywhere in a large set: byte-identical to the SDK, in one batch and one by one, from cold and warm caches."""
    tracer = rec.tracer()
    remote = SpanContext(REMOTE.trace_id, REMOTE.span_id, is_remote=True, trace_flags=TraceFlags(1))
    ports: list[Any] = [0, 1, 127, 128, 16383, 16384, 40000, 65535, 2**21 - 1, 2**21, 2**40, 2**63 - 1, -1, -(2**63)]
    ports += [True, False, 1.0, "80", 40000, 1]
    others = {f"k{i}": f"v{i}" for i in range(_otlp_trace._BLOCK_MAX_ITEMS)} | {"n": 7}
    for port in ports:
        if position == "first":
            attributes = {"client.port": port, **others}
        elif position == "last":
            attributes = {**others, "client.port": port}
        elif position == "middle":
            attributes = {"k": "v", "client.port": port, **others}
        else:
            attributes = {**others, "client": port}
        with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER, attributes=attributes):
            pass
        with tracer.start_as_current_span(  # under a remote parent: the message has a parent id
            "GET /x",
            kind=SpanKind.SERVER,
            context=trace.set_span_in_context(NonRecordingSpan(remote)),
            attributes=attributes,
        ):
            pass
    spans = rec.spans()
    items = [ended(s) for s in spans]
    assert all(type(item) is tuple for item in items)
    assert {item[5] for item in items} == {0, REMOTE.span_id}  # type: ignore[index]
    for span, item in zip(spans, items, strict=True):
        assert encode_spans([item]) == sdk_bytes([span])  # type: ignore[list-item]
    assert encode_spans(items) == sdk_bytes(spans)  # type: ignore[arg-type]
    entries = [key for key in _otlp_trace._item_cache if key[0] == "GET /x"]
    # With a port: one entry per parent (a local root, a remote parent), whatever the port. Without: one per
    # distinct str or int value of "client" (float and bool values are never keyed: they meet 1's and 0's entries
    # and take _compose's path), twice.
    distinct = 1 if position != "absent" else len({p for p in ports if type(p) in (int, str)})
    assert len(entries) == 2 * distinct


def test_one_scope_object_under_two_resources_keeps_each_resource() -> None:
    """ended() remembers the latest resource per scope object; a span of another resource still gets its own."""
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    scope = InstrumentationScope("shared", "1")
    resources = {service: Resource.create({"service.name": service}) for service in ("first", "second")}
    spans = [
        ReadableSpan(
            name=f"s{i}",
            context=SpanContext(0xA1 + i, 0xB1 + i, False, TraceFlags(1)),
            resource=resources[service],
            instrumentation_scope=scope,
            start_time=1,
            end_time=2,
        )
        for i, service in enumerate(("first", "second", "first", "second"))
    ]
    items = [ended(s) for s in spans]
    assert [as_readable(item).resource.attributes["service.name"] for item in items if item] == [
        "first",
        "second",
        "first",
        "second",
    ]
    assert encode_spans(items) == sdk_bytes(spans)  # type: ignore[arg-type]


def test_ended_spans_are_not_tracked_by_the_garbage_collector(rec: Recorder) -> None:
    import gc

    with rec.tracer().start_as_current_span("s", attributes={"model.name": "m", "model.batch_size": 4}):
        pass
    item = ended(rec.spans()[0])
    assert item is not None
    gc.collect()  # the attribute tuple is untracked at a first collection, the item at the next one
    gc.collect()
    assert not gc.is_tracked(item)


def test_what_only_the_span_carries_keeps_the_span(rec: Recorder) -> None:
    """Events, links, a trace state or dropped attributes: None (the processor queues the span itself)."""
    tracer = rec.tracer()
    with tracer.start_as_current_span("event") as span:
        span.add_event("e")
    with tracer.start_as_current_span("link", links=[Link(LOCAL_LINK)]):
        pass
    with tracer.start_as_current_span("state", context=trace.set_span_in_context(NonRecordingSpan(REMOTE))):
        pass
    kept = {s.name: ended(s) for s in rec.spans()}
    assert kept["event"] is None
    assert kept["link"] is None
    assert (kept["state"] is None) is bool(REMOTE.trace_state)
    limited = Recorder(limits=SpanLimits(max_span_attributes=1))
    with limited.tracer().start_as_current_span("dropped", attributes={"a": 1, "b": 2}):
        pass
    assert ended(limited.spans()[0]) is None


def test_an_ended_span_the_encoder_refuses_goes_to_the_sdk_encoder(rec: Recorder) -> None:
    with rec.tracer().start_as_current_span("fine", attributes={"ok": 1}):
        pass
    with rec.tracer().start_as_current_span("big", attributes={"big": 2**64, "ok": 1}):
        pass
    fine, big = rec.spans()
    items = [ended(fine), ended(big)]
    with pytest.raises(UnsupportedSpanData):
        encode_spans(items)  # type: ignore[arg-type]
    assert _span_payload(items) == sdk_bytes([fine, big])
    assert as_readable(items[1]).attributes == {"big": 2**64, "ok": 1}  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# The real pipeline: obskit.init() -> BatchSpanProcessor -> buffer -> sender -> receiver.


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_spans_exported_by_init_arrive_decoded(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    calls: list[int] = []
    real_encode = _otlp_trace.encode_spans

    def counting(spans: Sequence[ReadableSpan]) -> bytes:
        payload = real_encode(spans)
        calls.append(len(spans))
        return payload

    monkeypatch.setattr(_otlp_trace, "encode_spans", counting)
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    handle = obskit.init(endpoint=endpoint, protocol=protocol, service_name="encoder-e2e", system_metrics=False)
    tracer = trace.get_tracer("encoder.e2e", "2.0")
    attributes: dict[str, Any] = {
        "model.name": "fraud-xgb",
        "model.batch_size": 32,
        "model.warm": True,
        "model.threshold": 0.75,
    }
    with tracer.start_as_current_span("request", kind=SpanKind.SERVER, attributes={"http.route": "/predict"}):
        for stage in ("preprocess", "inference", "postprocess"):
            with tracer.start_as_current_span(f"{stage} fraud-xgb", attributes={**attributes, "model.stage": stage}):
                pass
    assert handle.force_flush(5)

    request = receiver.wait_for_span("request", timeout=5)
    assert request.kind == "SERVER"
    assert request.attributes["http.route"] == "/predict"
    assert request.resource["service.name"] == "encoder-e2e"
    assert request.scope == "encoder.e2e"
    inference = receiver.wait_for_span("inference fraud-xgb", timeout=5)
    assert inference.attributes == {**attributes, "model.stage": "inference"}
    assert inference.parent_span_id == request.span_id
    assert inference.trace_id == request.trace_id
    assert len(receiver.spans()) == 4
    assert sum(calls) >= 4  # the spans went through obskit's encoder (other batches may hold obskit's own)
