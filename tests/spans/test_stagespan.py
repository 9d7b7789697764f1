"""Stage spans made by _stagespan reach the collector exactly as the SDK span path would send them."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor

import obskit
from obskit import _stagespan
from obskit.testing import OtlpReceiver

from ._wire import received

SIGNAL_SPANS = "spans"


def _init(rx: OtlpReceiver) -> obskit.Handle:
    return obskit.init(endpoint=rx.grpc_endpoint, protocol="grpc", service_name="stagespan-test", system_metrics=False)


def _scenario(seen: list[type]) -> None:
    """Stage calls of every kind the fast path serves or hands to the SDK span, under one parent span (twice)."""

    @obskit.preprocess(model="m", version="1", batch_size=len)
    def featurize(rows: list[int]) -> list[int]:
        seen.append(type(trace.get_current_span()))
        return rows

    @obskit.inference(model="m", version="1")
    def infer(rows: list[int]) -> int:
        obskit.set_batch_size(len(rows) + 1)
        return len(rows)

    @obskit.postprocess(model="m", version="1", batch_size=len)  # an SDK span by its end: set_attribute() it is
    def annotate(rows: list[int]) -> int:
        span = trace.get_current_span()
        span.set_attribute("app.note", "kept")
        span.add_event("checked", {"n": len(rows)})
        return 0

    @obskit.stage("validate", model="m", version="1")
    def validate(rows: list[int]) -> None:
        raise ValueError("bad rows")

    @obskit.stage("relabel", model="m", version="1")
    def relabel(rows: list[int]) -> None:
        trace.get_current_span().set_attribute("model.batch_size", 99)  # the wrapper's size comes after it
        obskit.set_batch_size(len(rows))

    @obskit.stage("ends_early", model="m", version="1", batch_size=len)
    def ends_early(rows: list[int]) -> None:
        trace.get_current_span().end()  # the app ends the stage's span itself: the batch size comes too late

    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("request"):
        for _ in range(2):  # a site's first call resolves it (_open/_close); the second takes the resolved path
            rows = featurize([1, 2, 3])
            infer(rows)
            annotate(rows)
            with pytest.raises(ValueError, match="bad rows"):
                validate(rows)
            relabel(rows)
            ends_early(rows)


def test_fast_stage_spans_match_the_sdk_path_on_the_wire(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same calls with stage spans on and off: identical spans at the receiver, and every span accounted."""
    handle = _init(receiver)
    seen: list[type] = []
    _scenario(seen)
    assert handle.force_flush(timeout=10)
    fast = received(receiver, 13)
    stats = handle.telemetry_stats()[SIGNAL_SPANS]
    assert stats.produced == stats.exported == 13
    assert stats.balanced
    assert seen == [_stagespan.StageSpan] * 2  # the fast path was taken

    obskit.shutdown()
    from obskit import testing

    testing._reset()
    receiver.clear()
    monkeypatch.setattr(_stagespan.StageSpans, "start", lambda self: None)
    handle = _init(receiver)
    seen.clear()
    _scenario(seen)
    assert handle.force_flush(timeout=10)
    assert seen
    assert seen[0] is not _stagespan.StageSpan
    sdk = received(receiver, 13)
    assert fast == sdk

    def each(name: str, field: str) -> list[Any]:
        return [span[field] for span in fast if span["name"] == name]

    def batch_sizes(name: str) -> list[Any]:
        return [dict(attributes).get("model.batch_size") for attributes in each(name, "attributes")]

    assert batch_sizes("preprocess m") == [3, 3]
    assert batch_sizes("inference m") == [4, 4]
    assert batch_sizes("postprocess m") == [3, 3]
    assert each("postprocess m", "events") == [[("checked", ["n"])]] * 2
    assert all(status[0].endswith("ERROR") for status in each("validate m", "status"))
    assert batch_sizes("relabel m") == [3, 3]
    assert batch_sizes("ends_early m") == [None, None]
    assert all(s["parent"] == "request" for s in fast if s["name"] != "request")


def test_another_processor_gets_sdk_spans(receiver: OtlpReceiver) -> None:
    """A processor the application adds sees every stage span start and end: the fast path steps aside."""
    _init(receiver)

    class Seen(SpanProcessor):
        def __init__(self) -> None:
            self.started: list[str] = []
            self.ended: list[str] = []

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            self.started.append(span.name)

        def on_end(self, span: Any) -> None:
            self.ended.append(span.name)

    seen_processor = Seen()
    trace.get_tracer_provider().add_span_processor(seen_processor)  # type: ignore[attr-defined]
    seen: list[type] = []
    _scenario(seen)
    assert seen
    assert seen[0] is not _stagespan.StageSpan
    stages = ["preprocess m", "inference m", "postprocess m", "validate m", "relabel m", "ends_early m"]
    assert sorted(seen_processor.ended) == sorted([*stages, *stages, "request"])
    assert seen_processor.started.count("preprocess m") == 2


def test_a_stage_span_read_as_an_sdk_span(receiver: OtlpReceiver) -> None:
    """Reading a stage span's SDK fields works (it becomes the SDK span), before and after it ends."""
    _init(receiver)
    kept: list[Any] = []

    @obskit.inference(model="m", version="1")
    def infer() -> None:
        span = trace.get_current_span()
        assert isinstance(span, _stagespan.StageSpan)
        kept.append(span)
        assert span.name == "inference m"  # type: ignore[attr-defined]
        assert span.is_recording()

    with trace.get_tracer("test").start_as_current_span("request"):
        infer()
    span = kept[0]
    assert not span.is_recording()
    assert dict(span.attributes)["model.stage"] == "inference"
    span.end()  # a second end: ignored (the SDK logs it), not queued twice
    assert obskit.force_flush(timeout=10)
    receiver.wait_for_spans(2, timeout=10)
    assert [s.name for s in receiver.spans()].count("inference m") == 1


def test_a_stage_span_ended_from_many_threads_is_queued_once(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An application ending a stage span from several threads at once: queued once, as the SDK's span is."""
    handle = _init(receiver)
    kept: list[Any] = []

    @obskit.inference(model="m", version="1")
    def infer() -> None:
        kept.append(trace.get_current_span())

    spans = 20
    with trace.get_tracer("test").start_as_current_span("request"):
        for _ in range(spans):
            infer()
    assert all(type(span) is _stagespan.StageSpan for span in kept)
    for span in kept:  # live again, to be ended by the threads below
        span._end_time = None
    before = handle.telemetry_stats()[SIGNAL_SPANS].produced

    def slow_clock() -> int:
        time.sleep(0.001)  # not synchronisation: it widens the window between the ended-check and the end time
        return time.time_ns()

    monkeypatch.setattr(_stagespan, "time_ns", slow_clock)
    threads = 4
    barrier = threading.Barrier(threads)

    def end_all() -> None:
        for span in kept:
            barrier.wait()  # every thread at the same span
            span.end()

    workers = [threading.Thread(target=end_all) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert handle.telemetry_stats()[SIGNAL_SPANS].produced - before == spans
