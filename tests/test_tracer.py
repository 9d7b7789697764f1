"""obskit's lean span path (``_tracer``) makes the same spans as the SDK's, and keeps the SDK's sampling semantics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

from obskit import _safety, _tracer

RESOURCE = Resource.create({"service.name": "lean-test"})
REMOTE_SAMPLED = SpanContext(
    0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1), trace_state=TraceState([("k", "v")])
)
REMOTE_UNSAMPLED = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(0))


class Pair:
    """The same scenario run on the SDK's provider and on obskit's lean one."""

    def __init__(self, sampler: sampling.Sampler = sampling.DEFAULT_ON, limits: SpanLimits | None = None) -> None:
        self.sdk_exporter, self.lean_exporter = InMemorySpanExporter(), InMemorySpanExporter()
        self.sdk = TracerProvider(resource=RESOURCE, sampler=sampler, span_limits=limits)
        self.lean = _tracer.LeanTracerProvider(
            resource=RESOURCE,
            sampler=sampler,
            span_limits=limits,
            active_span_processor=_tracer.GuardedSpanProcessors(),
        )
        self.sdk.add_span_processor(SimpleSpanProcessor(self.sdk_exporter))
        self.lean.add_span_processor(SimpleSpanProcessor(self.lean_exporter))

    def run(self, scenario: Callable[[trace.Tracer], None]) -> tuple[list[Any], list[Any]]:
        scenario(self.sdk.get_tracer("scope", "1.2", attributes={"a": 1}))
        scenario(self.lean.get_tracer("scope", "1.2", attributes={"a": 1}))
        return (
            [_view(s) for s in self.sdk_exporter.get_finished_spans()],
            [_view(s) for s in self.lean_exporter.get_finished_spans()],
        )


def _view(span: ReadableSpan) -> dict[str, Any]:
    """Everything an exporter reads, with ids replaced by whether they relate."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind,
        "remote_parent": None if span.parent is None else span.parent.is_remote,
        "parent_span_id_known": span.parent is not None and span.parent.span_id in (0xDEF,),
        "flags": int(context.trace_flags),
        "trace_state": dict(context.trace_state),
        "attributes": dict(span.attributes or {}),
        "dropped_attributes": span.dropped_attributes,
        "events": [(e.name, dict(e.attributes or {})) for e in span.events],
        "dropped_events": span.dropped_events,
        "links": [(link.context.span_id, dict(link.attributes or {})) for link in span.links],
        "dropped_links": span.dropped_links,
        "status": (span.status.status_code, span.status.description),
        "resource": dict(span.resource.attributes),
        "scope": span.instrumentation_scope,
        "timed": span.start_time is not None and span.end_time is not None and span.end_time >= span.start_time,
    }


def test_same_spans_as_the_sdk_for_every_kind_of_span() -> None:
    def scenario(tracer: trace.Tracer) -> None:
        with tracer.start_as_current_span("root", kind=SpanKind.SERVER, attributes={"http.route": "/p", "n": 3}):
            with tracer.start_as_current_span("child", attributes=MappingProxyType({"model.name": "m"})) as child:
                child.set_attribute("model.batch_size", 4)
                child.set_attribute("model.name", "m2")  # replaced and moved last, as the SDK does
                child.set_attribute("model.tags", ["a", "b"])  # not a plain value: the SDK's path
                child.set_attribute("", 1)
                child.set_attributes({"stage.n": 1, "model.version": "7"})
                child.set_attributes({"mixed": [1, "a"], "fine": 2.5})
                child.add_event("first", {"i": 1})
                child.add_link(REMOTE_SAMPLED, {"why": "late link"})
            try:
                with tracer.start_as_current_span("failing"):
                    raise ValueError("boom")
            except ValueError:
                pass
            try:
                with tracer.start_as_current_span("quiet", record_exception=False, set_status_on_exception=False):
                    raise KeyError("k")
            except KeyError:
                pass
            span = tracer.start_span("odd values", attributes={"list": [1, 2], "bytes": b"x", "none": None, "": 1})
            span.set_status(Status(StatusCode.OK))
            span.update_name("renamed")
            span.end()
        tracer.start_span("linked", links=[Link(REMOTE_SAMPLED, {"l": True})]).end()
        ctx = trace.set_span_in_context(NonRecordingSpan(REMOTE_SAMPLED))
        tracer.start_span("remote child", context=ctx, kind=SpanKind.CONSUMER).end()

    sdk, lean = Pair().run(scenario)
    assert [s["name"] for s in lean] == ["child", "failing", "quiet", "renamed", "root", "linked", "remote child"]
    for expected, got in zip(sdk, lean, strict=True):
        if got["name"] == "failing":  # the stack trace names the line: compare all but it
            for event in (*expected["events"], *got["events"]):
                event[1].pop("exception.stacktrace")
        assert got == expected


def test_limits_and_invalid_values_take_the_sdk_path() -> None:
    def scenario(tracer: trace.Tracer) -> None:
        tracer.start_span("long", attributes={"s": "x" * 50, "t": ("a" * 9, "b")}).end()
        tracer.start_span("many", attributes={f"k{i}": i for i in range(5)}).end()
        span = tracer.start_span("events")
        for i in range(4):
            span.add_event(f"e{i}")
        span.end()
        full = tracer.start_span("full", attributes={"a": 1, "b": 2, "c": 3})
        full.set_attribute("b", 20)  # an existing key: replaced, moved last
        full.set_attribute("d", 4)  # past the count limit: the oldest goes
        full.set_attribute("e", "x" * 9)  # past the length limit: cut
        full.set_attributes({"f": 1, "g": 2})  # past the count limit, together
        full.end()

    limits = SpanLimits(max_span_attributes=3, max_span_attribute_length=5, max_events=2)
    sdk, lean = Pair(limits=limits).run(scenario)
    assert lean == sdk
    assert lean[0]["attributes"] == {"s": "xxxxx", "t": ("aaaaa", "b")}
    assert lean[1]["dropped_attributes"] == 2
    assert lean[2]["dropped_events"] == 2
    assert list(lean[3]["attributes"].items()) == [("e", "xxxxx"), ("f", 1), ("g", 2)]
    assert lean[3]["dropped_attributes"] == 4


class _RecordOnly(sampling.Sampler):
    """Records every span for the processors, samples none (the SDK's Decision.RECORD_ONLY), adds trace state."""

    def should_sample(self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any) -> Any:
        return sampling.SamplingResult(
            sampling.Decision.RECORD_ONLY, {"decided": "record only"}, TraceState([("ro", "1")])
        )

    def get_description(self) -> str:
        return "RecordOnly"


@pytest.mark.parametrize(
    ("sampler", "parent", "recording"),
    [
        (_RecordOnly(), None, True),  # recorded, not sampled: a span the processors see, never exported
        (_RecordOnly(), REMOTE_SAMPLED, True),
        (sampling.ParentBased(_RecordOnly()), None, True),
        (sampling.ParentBased(sampling.ALWAYS_ON, remote_parent_sampled=_RecordOnly()), REMOTE_SAMPLED, True),
        (sampling.DEFAULT_ON, REMOTE_SAMPLED, True),
        (sampling.DEFAULT_ON, REMOTE_UNSAMPLED, False),
        (sampling.ALWAYS_ON, REMOTE_UNSAMPLED, True),
        (sampling.ALWAYS_OFF, REMOTE_SAMPLED, False),
        (
            sampling.ParentBased(sampling.ALWAYS_ON, remote_parent_not_sampled=sampling.ALWAYS_ON),
            REMOTE_UNSAMPLED,
            True,
        ),
        (sampling.ParentBased(sampling.TraceIdRatioBased(0.0)), None, False),
        (sampling.ParentBased(sampling.TraceIdRatioBased(1.0)), None, True),
        (sampling.DEFAULT_ON, None, True),  # roots: decided without a sampler call
        (sampling.ALWAYS_ON, None, True),
        (sampling.ALWAYS_OFF, None, False),
        (sampling.DEFAULT_OFF, None, False),
    ],
)
def test_sampling_decisions_are_the_samplers(
    sampler: sampling.Sampler, parent: SpanContext | None, recording: bool
) -> None:
    pair = Pair(sampler)
    decisions = []
    for provider in (pair.sdk, pair.lean):
        ctx = None if parent is None else trace.set_span_in_context(NonRecordingSpan(parent))
        span = provider.get_tracer("t").start_span("s", context=ctx)
        child = provider.get_tracer("t").start_span("c", context=trace.set_span_in_context(span))
        decisions.append(
            (span.is_recording(), int(span.get_span_context().trace_flags), child.is_recording(),
             dict(child.get_span_context().trace_state), dict(getattr(span, "attributes", None) or {}))
        )  # fmt: skip
        child.end()
        span.end()
    assert decisions[0] == decisions[1]
    assert decisions[1][0] is recording
    if parent is not None and "RecordOnly" not in sampler.get_description():  # _RecordOnly sets its own state
        assert decisions[1][3] == dict(parent.trace_state)


def test_ids_relate_parent_and_child() -> None:
    exporter = InMemorySpanExporter()
    provider = _tracer.LeanTracerProvider(active_span_processor=_tracer.GuardedSpanProcessors())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("parent") as parent, tracer.start_as_current_span("child") as started:
        pass
    assert isinstance(started, ReadableSpan)
    child: ReadableSpan = started
    assert child.parent is not None
    assert child.parent.span_id == parent.get_span_context().span_id
    own = started.get_span_context()
    assert own.trace_id == parent.get_span_context().trace_id
    assert own.span_id != parent.get_span_context().span_id
    assert type(child).__name__ == "_LeanSpan"


def test_ended_span_ignores_changes_and_is_exported_once(caplog: pytest.LogCaptureFixture) -> None:
    exporter = InMemorySpanExporter()
    provider = _tracer.LeanTracerProvider(active_span_processor=_tracer.GuardedSpanProcessors())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("t").start_span("once", attributes={"a": 1})
    span.end()
    with caplog.at_level(logging.WARNING):
        span.end()
        span.update_name("late name")
        span.set_attribute("late", 1)
        span.add_event("late")
        span.add_link(REMOTE_SAMPLED)
    (exported,) = exporter.get_finished_spans()
    assert dict(exported.attributes or {}) == {"a": 1}
    assert exported.name == "once"
    assert exported.events == ()
    assert exported.links == ()
    assert "Calling end() on an ended span." in caplog.text


def test_cached_clean_view_is_the_callers_values() -> None:
    """A read-only view found clean once is taken as is next time; a different object is checked again."""
    exporter = InMemorySpanExporter()
    provider = _tracer.LeanTracerProvider(active_span_processor=_tracer.GuardedSpanProcessors())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    view = MappingProxyType({"model.name": "m"})
    for _ in range(2):
        tracer.start_span("s", attributes=view).end()
    odd: Any = MappingProxyType({"ok": "yes", "odd": object()})
    tracer.start_span("s", attributes=odd).end()
    spans = exporter.get_finished_spans()
    sdk_cleaned = BoundedAttributes(128, odd, immutable=False)  # what the SDK makes of the odd value
    assert [dict(s.attributes or {}) for s in spans] == [{"model.name": "m"}, {"model.name": "m"}, dict(sdk_cleaned)]
    assert dict(sdk_cleaned) != dict(odd)  # so the lean path did not take the view as it was
    assert spans[2].dropped_attributes == sdk_cleaned.dropped


class _Recording(SpanProcessor):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.calls.append(f"start {span.name}")

    def _on_ending(self, span: Any) -> None:
        self.calls.append(f"ending {span.name}")

    def on_end(self, span: ReadableSpan) -> None:
        self.calls.append(f"end {span.name}")


class _Failing(SpanProcessor):
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise RuntimeError("processor bug")

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("processor bug")


def test_processors_run_in_order_and_a_failing_one_is_counted_not_raised(swallowing: None) -> None:
    recording = _Recording()
    provider = _tracer.LeanTracerProvider(active_span_processor=_tracer.GuardedSpanProcessors())
    provider.add_span_processor(_Failing())
    provider.add_span_processor(recording)
    before = _safety.internal_error_count()
    provider.get_tracer("t").start_span("s").end()
    assert recording.calls == ["start s", "ending s", "end s"]
    assert _safety.internal_error_count() == before + 2


def test_sdk_path_when_internal_tracer_metrics_are_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    provider = _tracer.LeanTracerProvider(active_span_processor=_tracer.GuardedSpanProcessors())
    span = provider.get_tracer("t").start_span("s")
    assert type(span).__name__ == "_Span"  # the SDK's own class: its metrics are recorded at end
    span.end()
    token = otel_context.attach(trace.set_span_in_context(span))
    otel_context.detach(token)


def test_clean_attributes_from_an_integration_are_the_spans() -> None:
    exporter = InMemorySpanExporter()
    provider = _tracer.LeanTracerProvider(active_span_processor=_tracer.GuardedSpanProcessors())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    given = _tracer.CleanAttributes({"http.request.method": "GET", "server.port": 8000, "ok": True})
    span = provider.get_tracer("t").start_span("GET /x", kind=SpanKind.SERVER, attributes=given)
    given["later"] = "not on the span"  # the span holds its own copy
    span.set_attribute("http.route", "/x")
    span.end()
    (exported,) = exporter.get_finished_spans()
    assert dict(exported.attributes or {}) == {
        "http.request.method": "GET",
        "server.port": 8000,
        "ok": True,
        "http.route": "/x",
    }


def test_span_ids_come_from_the_providers_id_generator() -> None:
    """The default generator's draw is inlined; any other generator is still asked for every id."""
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    class Sequential(IdGenerator):
        def __init__(self) -> None:
            self.next_span = 0x100

        def generate_span_id(self) -> int:
            self.next_span += 1
            return self.next_span

        def generate_trace_id(self) -> int:
            return 0xFEED

    exporter = InMemorySpanExporter()
    provider = _tracer.LeanTracerProvider(
        id_generator=Sequential(), active_span_processor=_tracer.GuardedSpanProcessors()
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("ids")
    with tracer.start_as_current_span("root"), tracer.start_as_current_span("child"):
        pass
    contexts = [s.get_span_context() for s in exporter.get_finished_spans()]
    assert [(c.trace_id, c.span_id) for c in contexts if c is not None] == [(0xFEED, 0x102), (0xFEED, 0x101)]

    default = _tracer.LeanTracerProvider(active_span_processor=_tracer.GuardedSpanProcessors())
    default.add_span_processor(SimpleSpanProcessor(exporter := InMemorySpanExporter()))
    tracer = default.get_tracer("ids")
    with tracer.start_as_current_span("root"):
        for _ in range(200):
            tracer.start_span("child").end()
    ids = [s.context.span_id for s in exporter.get_finished_spans() if s.context is not None]
    assert len(set(ids)) == 201
    assert all(0 < i < 2**64 for i in ids)


def test_a_sampler_that_changes_attributes_is_heard() -> None:
    """The given attributes are kept only for the SDK's own samplers; another sampler's result attributes win."""

    class Tagging(sampling.Sampler):
        def should_sample(self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any) -> Any:
            return sampling.SamplingResult(sampling.Decision.RECORD_AND_SAMPLE, {"sampled.by": "tagging"})

        def get_description(self) -> str:
            return "Tagging"

    pair = Pair(Tagging())
    sdk, lean = pair.run(lambda tracer: tracer.start_span("s", attributes={"given": 1}).end())
    assert lean == sdk
    assert lean[0]["attributes"] == {"sampled.by": "tagging"}
    assert not _tracer._passes_attributes_through(Tagging())
    assert _tracer._passes_attributes_through(sampling.ParentBased(sampling.TraceIdRatioBased(0.5)))
    assert not _tracer._passes_attributes_through(sampling.ParentBased(Tagging()))
