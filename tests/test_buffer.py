"""The export buffer: retries, backoff, the memory bound, shutdown deadlines, fork, and exact accounting."""

from __future__ import annotations

import itertools
import json
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import obskit
from obskit import _safety
from obskit._buffer import (
    BATCH_OVERHEAD_BYTES,
    AccountedBatchSpanProcessor,
    Backoff,
    BufferedSpanExporter,
    ExportBuffer,
    SendResult,
    TelemetryStats,
    _span_payload,
)
from obskit.testing import OtlpReceiver

SPANS = "spans"
FAST = Backoff(initial=0.02, maximum=0.05)


class FakeSender:
    """A scripted sender: ``outcomes`` are consumed one per attempt (then success); every attempt is recorded."""

    def __init__(self, *outcomes: SendResult | BaseException | Callable[[float], SendResult], timeout: float = 1.0):
        self.timeout = timeout
        self.outcomes = list(outcomes)
        self.attempts: list[tuple[float, bytes, float]] = []
        self.delivered: list[bytes] = []
        self.closed = False
        self.cond = threading.Condition()

    def send(self, payload: bytes, timeout: float) -> SendResult:
        with self.cond:
            self.attempts.append((time.monotonic(), payload, timeout))
            self.cond.notify_all()
            outcome = self.outcomes.pop(0) if self.outcomes else SendResult.success()
        if callable(outcome) and not isinstance(outcome, SendResult):
            outcome = outcome(timeout)
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome.ok:
            with self.cond:
                self.delivered.append(payload)
                self.cond.notify_all()
        return outcome

    def wait_attempts(self, count: int, timeout: float = 5.0) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.attempts) >= count, timeout):
                raise TimeoutError(f"{len(self.attempts)} attempts, expected {count}")

    def describe(self) -> str:
        return "fake://collector"

    def close(self) -> None:
        self.closed = True

    def reset_after_fork(self) -> None:
        self.attempts, self.delivered = [], []
        self.cond = threading.Condition()


@pytest.fixture
def make_buffer() -> Iterator[Callable[..., ExportBuffer]]:
    made: list[ExportBuffer] = []

    def make(sender: FakeSender, *, max_bytes: int = 1 << 20, backoff: Backoff = FAST, **kwargs: Any) -> ExportBuffer:
        buffer = ExportBuffer({SPANS: sender}, max_bytes=max_bytes, backoff=backoff, **kwargs)
        made.append(buffer)
        return buffer

    yield make
    for buffer in made:
        buffer.shutdown(0.5)


def _stats(buffer: ExportBuffer) -> TelemetryStats:
    return buffer.stats()[SPANS]


def _dropped(stats: TelemetryStats) -> dict[str, int]:
    return {reason: n for reason, n in stats.dropped.items() if n}


def test_batches_are_sent_once_and_accounted(make_buffer):
    """Each buffered request is sent once; produced = exported, nothing buffered or dropped."""
    sender = FakeSender()
    buffer = make_buffer(sender)
    buffer.put(SPANS, b"a" * 10, 3)
    buffer.put(SPANS, b"b" * 10, 4)
    assert buffer.flush(5)
    assert b"".join(sender.delivered) == b"a" * 10 + b"b" * 10
    stats = _stats(buffer)
    assert (stats.produced, stats.exported, stats.buffered, stats.buffered_bytes) == (7, 7, 0, 0)
    assert _dropped(stats) == {}
    assert stats.balanced


def test_retryable_failures_back_off_then_deliver_in_order(make_buffer):
    """UNAVAILABLE three times: the same request is retried with growing waits, then delivered once, in order."""
    sender = FakeSender(*(SendResult.retry("UNAVAILABLE") for _ in range(3)))
    buffer = make_buffer(sender, backoff=Backoff(initial=0.04, maximum=1.0))
    buffer.put(SPANS, b"first", 1)
    sender.wait_attempts(1)
    buffer.put(SPANS, b"second", 1)
    sender.wait_attempts(4)
    with sender.cond:
        sender.cond.wait_for(lambda: sender.delivered, 5)
    times = [t for t, _, _ in sender.attempts]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Failure n waits uniform(0.5, 1) x 0.04 x 2**(n-1): at least 0.02, 0.04, 0.08.
    assert gaps[0] >= 0.02 * 0.9
    assert gaps[1] >= 0.04 * 0.9
    assert gaps[2] >= 0.08 * 0.9
    # After failures one batch probes the collector; once it answers, the backlog goes merged, order kept.
    assert buffer.flush(5)
    assert sender.delivered == [b"first", b"second"]
    assert _stats(buffer).exported == 2


def test_collector_retry_hint_is_honoured_even_by_flush(make_buffer):
    """A Retry-After / RetryInfo of 0.3 s delays the next attempt by 0.3 s; flush() does not cut it short."""
    sender = FakeSender(SendResult.retry("HTTP 429", retry_after=0.3))
    buffer = make_buffer(sender)
    buffer.put(SPANS, b"x", 1)
    sender.wait_attempts(1)
    assert buffer.flush(3)
    first, second = sender.attempts[0][0], sender.attempts[1][0]
    assert second - first >= 0.3 * 0.95


def test_a_retry_hint_of_zero_still_pauses(make_buffer):
    """A collector answering "Retry-After: 0" to every attempt gets them Backoff.min_hint apart, not in a loop."""
    sender = FakeSender(*[SendResult.retry("HTTP 429", retry_after=0.0)] * 2)  # then success
    buffer = make_buffer(sender)
    buffer.put(SPANS, b"x", 1)
    sender.wait_attempts(3)
    first, second, third = (attempt[0] for attempt in sender.attempts[:3])
    floor = FAST.min_hint
    assert second - first >= floor * 0.95
    assert third - second >= floor * 0.95
    assert FAST.delay(1, 0.0) == floor == 0.5


@pytest.mark.parametrize("hint", [math.nan, math.inf, -5.0])
def test_a_retry_hint_that_is_no_delay_is_ignored(make_buffer, hint):
    """A NaN/infinite/negative hint is no hint: the normal backoff applies, which flush() skips."""
    sender = FakeSender(SendResult.retry("HTTP 429", retry_after=hint))
    buffer = make_buffer(sender, backoff=Backoff(initial=30.0, maximum=30.0))
    buffer.put(SPANS, b"x", 1)
    sender.wait_attempts(1)
    assert buffer.flush(3)  # a hinted wait would be honoured by flush(); our own 15-30 s backoff is skipped
    assert sender.delivered == [b"x"]


def test_a_backoff_without_a_usable_delay_still_retries(make_buffer):
    """Defence in depth: a Backoff yielding NaN must not leave the signal never due (and its thread spinning)."""
    sender = FakeSender(SendResult.retry("UNAVAILABLE"))
    buffer = make_buffer(sender, backoff=Backoff(initial=0.02, maximum=math.nan))
    buffer.put(SPANS, b"x", 1)
    sender.wait_attempts(1)
    assert buffer.flush(5)
    assert sender.delivered == [b"x"]


def test_a_hint_too_long_for_a_condition_wait_does_not_break_the_sender_thread(make_buffer, swallowing):
    """An uncapped 1e300 s hint: Condition.wait() cannot take it (OverflowError); the thread waits in bounded steps."""
    errors = _safety.internal_error_count()
    sender = FakeSender(SendResult.retry("RESOURCE_EXHAUSTED", retry_after=1e300))
    buffer = make_buffer(sender, backoff=Backoff(initial=0.02, maximum=0.05, max_hint=math.inf))
    buffer.put(SPANS, b"x", 1)
    sender.wait_attempts(1)
    buffer.put(SPANS, b"y", 1)  # wakes the sender thread, which computes its wait again
    assert not buffer.flush(0.3)  # the collector's hint is honoured
    assert _safety.internal_error_count() == errors
    assert buffer.shutdown(0.2) is False
    assert _dropped(_stats(buffer)) == {"shutdown": 2}


def test_non_retryable_answer_drops_the_batch_as_rejected(make_buffer, caplog):
    """INVALID_ARGUMENT / HTTP 400: dropped at once, counted as rejected, logged once."""
    sender = FakeSender(SendResult.reject("HTTP 400"), SendResult.reject("HTTP 400"))
    buffer = make_buffer(sender)
    buffer.put(SPANS, b"x", 5)
    buffer.put(SPANS, b"y", 6)
    assert buffer.flush(5)
    stats = _stats(buffer)
    assert _dropped(stats) == {"rejected": 11}
    assert stats.exported == 0
    assert stats.balanced
    assert len([r for r in caplog.records if "rejected" in r.getMessage()]) == 1


def test_partial_success_counts_the_refused_items(make_buffer):
    """A partial success of 2 refused spans out of 5: 3 exported, 2 rejected."""
    sender = FakeSender(SendResult.success(rejected=2, detail="2 spans too large"))
    buffer = make_buffer(sender)
    buffer.put(SPANS, b"x", 5)
    assert buffer.flush(5)
    stats = _stats(buffer)
    assert (stats.exported, _dropped(stats)) == (3, {"rejected": 2})


def test_oldest_data_is_dropped_past_the_bound(make_buffer):
    """Past OBSKIT_EXPORT_BUFFER_BYTES the oldest requests go first; the request in flight is kept."""
    release = threading.Event()

    def parked(_timeout: float) -> SendResult:
        release.wait(5)
        return SendResult.retry("UNAVAILABLE")

    sender = FakeSender(parked)
    size = 1000
    buffer = make_buffer(sender, max_bytes=10 * (size + BATCH_OVERHEAD_BYTES))
    buffer.put(SPANS, b"%04d" % 0 + b"." * (size - 4), 1)
    sender.wait_attempts(1)  # request 0 is in flight
    for i in range(1, 30):
        buffer.put(SPANS, b"%04d" % i + b"." * (size - 4), 1)
        assert buffer.used_bytes <= buffer.max_bytes
    stats = _stats(buffer)
    assert stats.buffered == 10
    assert _dropped(stats) == {"buffer_full": 20}
    release.set()
    assert buffer.flush(5)
    delivered = b"".join(sender.delivered)
    ids = [int(delivered[i : i + 4]) for i in range(0, len(delivered), size)]
    assert ids == [0, *range(21, 30)]
    stats = _stats(buffer)
    assert (stats.produced, stats.exported, stats.buffered) == (30, 10, 0)
    assert stats.balanced


def test_a_sender_that_raises_is_counted_and_the_thread_keeps_going(make_buffer, caplog):
    """A bug in a sender: that batch is dropped as 'error', counted and logged once; later batches still go."""
    before = _safety.internal_error_count()
    sender = FakeSender(RuntimeError("boom"))
    buffer = make_buffer(sender)
    buffer.put(SPANS, b"x", 2)
    sender.wait_attempts(1)
    buffer.put(SPANS, b"y", 3)
    assert buffer.flush(5)
    stats = _stats(buffer)
    assert (stats.exported, _dropped(stats)) == (3, {"error": 2})
    assert _safety.internal_error_count() == before + 1
    assert [r.getMessage() for r in caplog.records if "internal error" in r.getMessage()] == [
        "obskit internal error in export spans: RuntimeError (further ones are counted, not logged)"
    ]


def test_shutdown_is_bounded_against_a_black_hole(make_buffer):
    """A collector that never answers: shutdown(0.5) returns within its deadline and counts what is left."""
    hole = threading.Event()

    def black_hole(timeout: float) -> SendResult:
        hole.wait(timeout)
        return SendResult.retry("DEADLINE_EXCEEDED")

    sender = FakeSender(*(black_hole for _ in range(100)), timeout=30.0)
    buffer = make_buffer(sender)
    buffer.put(SPANS, b"x", 4)
    sender.wait_attempts(1)
    buffer.put(SPANS, b"y", 5)
    started = time.monotonic()
    assert buffer.shutdown(0.5) is False
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 1.0
    buffer.put(SPANS, b"late", 7)
    stats = _stats(buffer)
    assert (stats.exported, stats.buffered, _dropped(stats)) == (0, 0, {"shutdown": 16})
    assert stats.balanced
    assert sender.closed
    hole.set()


def test_shutdown_drains_a_healthy_collector(make_buffer):
    """With the collector up, shutdown() sends everything and returns True."""
    sender = FakeSender()
    buffer = make_buffer(sender)
    for i in range(20):
        buffer.put(SPANS, b"%d" % i, 1)
    assert buffer.shutdown(5) is True
    assert _stats(buffer).exported == 20


def test_shutdown_gives_up_early_when_the_collector_asks_for_longer(make_buffer):
    """A Retry-After beyond the deadline: shutdown does not wait it out, it drops and returns."""
    sender = FakeSender(SendResult.retry("HTTP 503", retry_after=60))
    buffer = make_buffer(sender)
    buffer.put(SPANS, b"x", 1)
    sender.wait_attempts(1)
    started = time.monotonic()
    assert buffer.shutdown(3) is False
    assert time.monotonic() - started < 1.0


def _spans(n: int, prefix: str = "s") -> list[Any]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    for i in range(n):
        tracer.start_span(f"{prefix}{i}").end()
    return list(memory.get_finished_spans())


def test_a_backlog_is_merged_into_few_valid_requests(make_buffer):
    """50 buffered batches: once a probe batch gets through, the other 49 go as one request; all spans, in order."""
    sender = FakeSender(SendResult.retry("UNAVAILABLE"), timeout=1.0)
    buffer = make_buffer(sender, backoff=Backoff(initial=0.5, maximum=0.5))
    spans = _spans(100)
    buffer.put(SPANS, _span_payload(spans[:2]), 2)
    sender.wait_attempts(1)
    for i in range(2, 100, 2):
        buffer.put(SPANS, _span_payload(spans[i : i + 2]), 2)
    assert buffer.flush(5)
    assert len(sender.delivered) == 2
    request = ExportTraceServiceRequest.FromString(b"".join(sender.delivered))
    names = [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert names == [f"s{i}" for i in range(100)]


def test_batches_arriving_within_the_linger_share_one_request(make_buffer):
    """A batch waits for others (up to the linger); once linger_bytes are buffered they go at once, as one."""
    spans = _spans(8)
    payloads = [_span_payload(spans[i : i + 2]) for i in range(0, 8, 2)]
    three = sum(len(payload) + BATCH_OVERHEAD_BYTES for payload in payloads[:3])
    sender = FakeSender()
    buffer = make_buffer(sender, linger={SPANS: 60.0}, linger_bytes=three + 1)
    for payload in payloads[:3]:
        buffer.put(SPANS, payload, 2)
    with sender.cond:  # nothing goes for a minute: give an eager sender a moment to show itself
        assert not sender.cond.wait_for(lambda: sender.attempts, 0.3)
    buffer.put(SPANS, payloads[3], 2)  # past linger_bytes
    sender.wait_attempts(1)
    assert [payload for _at, payload, _timeout in sender.attempts] == [b"".join(payloads)]
    request = ExportTraceServiceRequest.FromString(sender.attempts[0][1])
    assert [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans] == [
        f"s{i}" for i in range(8)
    ]
    assert buffer.flush(5)
    assert _stats(buffer).exported == 8


def test_a_lone_batch_is_sent_when_its_linger_ends_and_flush_does_not_wait(make_buffer):
    """Without company a batch goes after the linger, not before; flush() sends at once whatever lingers."""
    sender = FakeSender()
    buffer = make_buffer(sender, linger={SPANS: 0.3})
    before = time.monotonic()
    buffer.put(SPANS, b"lone", 1)
    sender.wait_attempts(1)
    assert sender.attempts[0][0] - before >= 0.3
    lingering = make_buffer(FakeSender(), linger={SPANS: 60.0})
    lingering.put(SPANS, b"flushed", 1)
    assert lingering.flush(5)
    assert _stats(lingering).exported == 1


def test_only_spans_and_logs_linger():
    """The buffer obskit builds: spans and logs wait for company, metric points (one export per interval) do not."""
    from obskit._buffer import LINGER_SECONDS
    from obskit._config import load_settings
    from obskit._exporters import export_buffer

    buffer = export_buffer(load_settings({}))
    assert buffer is not None
    try:
        assert buffer._linger == {"spans": LINGER_SECONDS, "logs": LINGER_SECONDS}
    finally:
        buffer.shutdown(0.1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_starts_empty_and_sends_only_its_own(make_buffer):
    """After fork the child has its own empty buffer and sender thread; the parent's data is sent once, by it."""
    gate = threading.Event()

    def parked(_timeout: float) -> SendResult:
        gate.wait(5)
        return SendResult.retry("UNAVAILABLE")

    sender = FakeSender(parked)
    buffer = make_buffer(sender)
    buffer.put(SPANS, b"parent", 1)
    sender.wait_attempts(1)
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded process": fork is what we test
        pid = os.fork()
    if pid == 0:  # the child: report and leave without running the parent's exit handlers
        try:
            before = _stats(buffer)
            sender.outcomes = []
            buffer.put(SPANS, b"child", 1)
            flushed = buffer.flush(5)
            report = {
                "before": [before.produced, before.buffered],
                "flushed": flushed,
                "delivered": [p.decode() for p in sender.delivered],
                "after": [_stats(buffer).produced, _stats(buffer).exported],
            }
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        report = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert report == {"before": [0, 0], "flushed": True, "delivered": ["child"], "after": [1, 1]}
    gate.set()
    assert buffer.flush(5)
    assert sender.delivered == [b"parent"]


def _accounted_processor(make_buffer):
    """A span processor whose queue holds 10 spans, its buffer and sender, and a tracer that ends spans into it."""
    sender = FakeSender()
    buffer = make_buffer(sender)
    processor = AccountedBatchSpanProcessor(
        BufferedSpanExporter(buffer), max_queue_size=10, max_export_batch_size=10, schedule_delay_millis=60_000
    )
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    return sender, buffer, processor, provider.get_tracer("t")


def test_span_processor_queues_ended_tuples_and_spans_it_cannot(make_buffer):
    """An ended span is queued as a tuple (the span is freed); one with an event as the span; both are exported."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    sender, buffer, processor, tracer = _accounted_processor(make_buffer)
    with processor._batch_processor._export_lock:  # the worker waits: the queue can be looked at
        tracer.start_span("plain", attributes={"ok": 1}).end()
        with tracer.start_as_current_span("with event") as span:
            span.add_event("e")
        queued = list(reversed(processor._batch_processor._queue))
    assert type(queued[0]) is tuple
    assert queued[1].name == "with event"
    assert processor.force_flush(5)
    assert buffer.flush(5)
    [payload] = sender.delivered
    request = ExportTraceServiceRequest.FromString(payload)
    assert [s.name for s in request.resource_spans[0].scope_spans[0].spans] == ["plain", "with event"]
    assert _stats(buffer).produced == 2
    processor.shutdown()


@pytest.mark.parametrize("provider_class", ["sdk", "lean"])
def test_recorded_but_unsampled_spans_are_neither_queued_nor_counted(make_buffer, provider_class):
    """A sampler's RECORD_ONLY decision: the span records for processors, but is not exported (as the SDK's BSP)."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    from obskit._tracer import LeanTracerProvider

    class RecordOnlyForUnsampled(Sampler):
        def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None, **_: Any):
            return SamplingResult(Decision.RECORD_ONLY if name.startswith("unsampled") else Decision.RECORD_AND_SAMPLE)

        def get_description(self) -> str:
            return "record-only for 'unsampled*'"

    sender = FakeSender()
    buffer = make_buffer(sender)
    processor = AccountedBatchSpanProcessor(BufferedSpanExporter(buffer), schedule_delay_millis=60_000)
    cls = LeanTracerProvider if provider_class == "lean" else TracerProvider
    provider = cls(sampler=RecordOnlyForUnsampled(), shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    for name in ("unsampled root", "sampled root", "unsampled again"):
        span = tracer.start_span(name)
        assert span.is_recording()
        span.end()
    assert processor.force_flush(5)
    assert buffer.flush(5)
    [payload] = sender.delivered
    request = ExportTraceServiceRequest.FromString(payload)
    assert [s.name for s in request.resource_spans[0].scope_spans[0].spans] == ["sampled root"]
    assert _stats(buffer).produced == 1
    processor.shutdown()


def test_sdk_queue_overflow_is_counted_exactly(make_buffer):
    """The SDK processor's own queue (10) overflows while its worker is busy: 20 of 30 spans are queue_full."""
    sender, buffer, processor, tracer = _accounted_processor(make_buffer)
    with processor._batch_processor._export_lock:  # the worker is "busy exporting"
        for i in range(30):
            tracer.start_span(f"s{i}").end()
        blocked = threading.Thread(target=lambda: stats_while_blocked.append(_stats(buffer)))
        stats_while_blocked: list[TelemetryStats] = []
        blocked.start()
        blocked.join(0.2)
        assert blocked.is_alive(), "a snapshot waits for the batch in hand to reach the buffer"
    blocked.join(5)
    [snapshot] = stats_while_blocked
    assert snapshot.produced == 30
    assert snapshot.dropped["queue_full"] == 20
    assert snapshot.balanced
    processor.force_flush()
    assert buffer.flush(5)
    stats = _stats(buffer)
    assert (stats.produced, stats.exported, stats.buffered, _dropped(stats)) == (30, 10, 0, {"queue_full": 20})
    names = [
        s.name
        for payload in sender.delivered
        for rs in ExportTraceServiceRequest.FromString(payload).resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]
    assert names == [f"s{i}" for i in range(20, 30)], "the SDK queue also drops its oldest"
    processor.shutdown()
    tracer.start_span("after shutdown").end()
    buffer.shutdown(1)
    stats = _stats(buffer)
    assert stats.produced == 31
    assert stats.dropped["shutdown"] == 1
    assert stats.balanced


def test_unlocked_puts_racing_snapshots_stay_exact(make_buffer):
    """Four threads end 100 spans each into a queue of 200 while snapshots are taken: every snapshot balances,
    nothing goes uncounted, and overflow is exactly what did not fit.

    Spans enter the queue without a lock while it is short (``_SdkQueue.put``); what was produced is derived at a
    snapshot, so a snapshot between two puts must still add up.
    """
    import sys

    sender = FakeSender()
    buffer = make_buffer(sender)
    processor = AccountedBatchSpanProcessor(
        BufferedSpanExporter(buffer), max_queue_size=200, max_export_batch_size=100, schedule_delay_millis=60_000
    )
    assert processor._account.unlocked_below == 99
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    seen: list[TelemetryStats] = []
    done = threading.Event()

    def snapshots() -> None:
        while not done.is_set():
            seen.append(_stats(buffer))

    def produce() -> None:
        for i in range(100):
            tracer.start_span(f"s{i}").end()

    # The worker waits on the old event for a minute: a full batch no longer wakes it, nothing leaves the queue.
    batch_processor = processor._batch_processor
    waited_on, batch_processor._worker_awaken = batch_processor._worker_awaken, threading.Event()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        watcher = threading.Thread(target=snapshots)
        watcher.start()
        producers = [threading.Thread(target=produce) for _ in range(4)]
        for t in producers:
            t.start()
        for t in producers:
            t.join(10)
        done.set()
    finally:
        sys.setswitchinterval(interval)
    watcher.join(10)
    assert len({s.produced for s in seen}) > 2, "snapshots were taken while spans came in"
    assert all(s.balanced for s in seen)
    produced = [s.produced for s in seen]
    overflowed = [s.dropped["queue_full"] for s in seen]
    assert produced == sorted(produced), "counts never go back"
    assert overflowed == sorted(overflowed), "counts never go back"
    stats = _stats(buffer)
    assert (stats.produced, stats.buffered, _dropped(stats)) == (400, 200, {"queue_full": 200})
    processor.force_flush()
    assert buffer.flush(5)
    stats = _stats(buffer)
    assert (stats.produced, stats.exported, stats.buffered, _dropped(stats)) == (400, 200, 0, {"queue_full": 200})
    batch_processor._worker_awaken = waited_on  # so that shutdown() wakes the worker
    processor.shutdown()


# ---------------------------------------------------------------------------------------------------------------
# Through obskit.init() against a real receiver.


@pytest.fixture(params=["grpc", "http/protobuf"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def rx() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


def _endpoint(rx: OtlpReceiver, protocol: str) -> str:
    return rx.grpc_endpoint if protocol == "grpc" else rx.http_endpoint


def test_collector_outage_loses_nothing_and_accounts_exactly(rx: OtlpReceiver, protocol: str):
    """Collector down: spans, logs and metric points wait; back up: all arrive once, and the books balance."""
    import logging

    handle = obskit.init(endpoint=_endpoint(rx, protocol), protocol=protocol, system_metrics=False)
    rx.stop()
    tracer = trace.get_tracer("t")
    for i in range(300):
        with tracer.start_as_current_span("outage", attributes={"i": i}):
            if i % 50 == 0:
                logging.getLogger("app.outage").warning("request %d", i)
    assert not handle.force_flush(0.3)
    stats = handle.telemetry_stats()
    assert (stats["spans"].produced, stats["spans"].buffered, stats["spans"].exported) == (300, 300, 0)
    assert stats["logs"].buffered == 6
    assert stats["metric_points"].buffered == stats["metric_points"].produced > 0
    assert all(s.balanced for s in stats.values())

    rx.start()
    assert handle.force_flush(10)
    stats = handle.telemetry_stats()
    assert len(rx.spans("outage")) == 300
    assert sorted(s.attributes["i"] for s in rx.spans("outage")) == list(range(300))
    assert stats["spans"].exported == 300
    assert stats["logs"].exported == len(rx.logs()) == 6
    assert stats["metric_points"].exported == len(rx.metric_points())
    for signal_stats in stats.values():
        assert signal_stats.buffered == 0
        assert signal_stats.dropped_total == 0
        assert signal_stats.balanced
    # The same books, as obskit's own metrics (collected on the next export).
    assert handle.force_flush(5)
    exported = rx.wait_for_metric("obskit.telemetry.exported", attributes={"obskit.signal": "spans"}, timeout=5)
    assert exported.value == 300
    assert exported.unit == "{item}"
    assert handle.shutdown(5)


def test_buffer_bound_drops_the_oldest_spans(rx: OtlpReceiver):
    """A 1 MiB buffer and a long outage: the newest spans survive, every drop is counted, the books balance."""
    handle = obskit.init(
        endpoint=rx.grpc_endpoint,
        system_metrics=False,
        export_buffer_bytes="1MiB",
        logs_exporter="none",
    )
    assert handle.tracer_provider is not None
    rx.stop()
    tracer = trace.get_tracer("t")
    padding = "p" * 300
    total = 8000
    for i in range(total):
        tracer.start_span("bounded", attributes={"i": i, "pad": padding}).end()
        if i % 1000 == 999:
            handle.tracer_provider.force_flush()  # hand the SDK queue to the buffer (no network involved)
    handle.tracer_provider.force_flush()
    stats = handle.telemetry_stats()["spans"]
    assert stats.produced == total
    assert stats.dropped["buffer_full"] > 0
    assert stats.buffered_bytes <= 1024 * 1024
    assert stats.balanced
    rx.start()
    assert handle.force_flush(15)
    stats = handle.telemetry_stats()["spans"]
    received = sorted(s.attributes["i"] for s in rx.spans("bounded"))
    assert len(received) == stats.exported
    assert stats.exported + stats.dropped["buffer_full"] == total
    assert stats.dropped_total == stats.dropped["buffer_full"]
    # The newest spans all arrived; of the older ones, at most the one request that was in flight.
    newest = [i for i in received if i >= total - (stats.exported - 512)]
    assert newest == list(range(total - (stats.exported - 512), total))
    assert received[-1] == total - 1
    handle.force_flush(5)
    dropped = rx.wait_for_metric(
        "obskit.telemetry.dropped", attributes={"obskit.signal": "spans", "obskit.reason": "buffer_full"}, timeout=5
    )
    assert dropped.value == stats.dropped["buffer_full"]
    assert handle.shutdown(5)


def test_shutdown_with_the_collector_down_is_bounded_and_counted(rx: OtlpReceiver):
    """shutdown(0.5) with nothing listening returns in time; the spans it could not send are 'shutdown' drops."""
    handle = obskit.init(endpoint=rx.grpc_endpoint, system_metrics=False, timeout=30)
    rx.stop()
    for _ in range(10):
        trace.get_tracer("t").start_span("lost").end()
    started = time.monotonic()
    assert handle.shutdown(timeout=0.5) is False
    assert time.monotonic() - started < 0.7
    stats = handle.telemetry_stats()["spans"]
    assert (stats.produced, stats.dropped["shutdown"], stats.buffered) == (10, 10, 0)
    started = time.monotonic()
    assert handle.shutdown() is False  # idempotent: nothing is shut down twice, the outcome is the first one's
    assert time.monotonic() - started < 0.1


def test_gzip_compression_through_obskit_senders(rx: OtlpReceiver, protocol: str):
    """OTEL_EXPORTER_OTLP_COMPRESSION=gzip (with export headers set): the collector decodes what obskit sends."""
    handle = obskit.init(
        endpoint=_endpoint(rx, protocol),
        protocol=protocol,
        compression="gzip",
        headers={"x-tenant": "ml"},
        system_metrics=False,
    )
    trace.get_tracer("t").start_span("compressed").end()
    assert handle.force_flush(5)
    rx.wait_for_span("compressed", timeout=5)
    assert handle.telemetry_stats()["spans"].exported == 1
    assert handle.shutdown(5)


def test_the_fork_hook_waits_for_a_grpc_call_then_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before a fork obskit takes the lock every gRPC export call holds: at once when no call is in flight, after
    at most ``wait_s`` when one is (the fork then goes ahead); the child starts with a lock of its own."""
    from obskit._exporters import _grpc_calls

    monkeypatch.setattr(_grpc_calls, "wait_s", 0.3)
    monkeypatch.setattr(_grpc_calls, "lock", threading.Lock())
    _grpc_calls._before_fork()  # no call in flight
    assert _grpc_calls.lock.locked()
    _grpc_calls._after_in_parent()
    assert not _grpc_calls.lock.locked()

    in_call, done = threading.Event(), threading.Event()

    def call() -> None:
        with _grpc_calls.lock:
            in_call.set()
            done.wait(10)

    caller = threading.Thread(target=call)
    caller.start()
    assert in_call.wait(10)
    started = time.monotonic()
    _grpc_calls._before_fork()
    waited = time.monotonic() - started
    _grpc_calls._after_in_parent()
    assert _grpc_calls.lock.locked()  # still the caller's: the hook gave up and released nothing
    assert 0.25 <= waited < 5.0
    parent_lock = _grpc_calls.lock
    _grpc_calls._after_in_child()
    assert _grpc_calls.lock is not parent_lock
    assert not _grpc_calls.lock.locked()
    done.set()
    caller.join(10)
    assert not parent_lock.locked()
