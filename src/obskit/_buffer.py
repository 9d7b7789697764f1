"""The memory-bounded export buffer between the SDK's batch processors/periodic reader and the OTLP senders.

How data flows (SPEC §5):

- The SDK's ``BatchSpanProcessor``, ``BatchLogRecordProcessor`` and ``PeriodicExportingMetricReader`` call the
  ``Buffered*Exporter.export()`` below. It encodes the batch into the OTLP request that will go on the wire
  (protobuf), appends it to the :class:`ExportBuffer` and returns SUCCESS: the SDK's worker never waits on the
  network, so neither does a request.
- One sender thread per process (re-created after ``fork``) takes the oldest request of a signal and makes ONE
  attempt, bounded by the export timeout. The OpenTelemetry exporters' own retry loops (up to six attempts with
  sleeps of up to 32 s, at exit too) are bypassed: the buffer does the waiting. A retryable failure (collector
  unreachable or black-holing, UNAVAILABLE, RESOURCE_EXHAUSTED, 429, 502-504) puts the request back at the head of
  its queue and backs that signal off exponentially with jitter, or for as long as the collector's gRPC
  ``RetryInfo`` / HTTP ``Retry-After`` asks (up to ``Backoff.max_hint``; a NaN, infinite, negative or unparsable
  hint is no hint). Any other answer drops it as ``rejected``.
- The bound (``OBSKIT_EXPORT_BUFFER_BYTES``) is shared by the three signals and counts the exact encoded size of
  every buffered request plus a fixed per-batch overhead. Past it the oldest request of any signal is dropped.
- Several buffered requests of one signal are sent as one: concatenated OTLP protobuf messages are a valid message
  whose repeated ``resource_*`` fields are the union, so a backlog drains in few round trips. A batch of spans or
  log records waits up to ``LINGER_SECONDS`` for others to share its request (a gRPC call's CPU cost is mostly
  fixed); ``flush()``, shutdown and retries do not wait.

Accounting (``obskit.telemetry.*``), per signal, in items (spans, metric data points, log records)::

    produced = exported + dropped + buffered        (exactly, at any instant)

``produced`` counts sampled spans and log records handed to the SDK batch processor, and metric points handed to
the exporter; ``buffered`` is what waits in the SDK processor's queue plus what waits here (including a request in
flight). Drop reasons: ``queue_full`` (the SDK processor's bounded queue overflowed: counted where an item can
push another out, see ``_SdkQueue``), ``buffer_full``, ``rejected`` (a non-retryable answer, or items the
collector refused in a partial success), ``shutdown`` (left over at the shutdown deadline, or produced after it) and
``error`` (a batch that could not be encoded or whose send raised; also counted in ``obskit.internal_errors``).
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from . import _safety
from . import _semconv as sc
from ._context import TRACE_FLAGS as _TRACE_FLAGS
from ._otlp_trace import ended
from ._tracer import _LeanSpan

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import ReadableLogRecord, ReadWriteLogRecord
    from opentelemetry.sdk.trace import ReadableSpan

_logger = logging.getLogger("obskit")

SIGNALS: Final = (sc.SIGNAL_SPANS, sc.SIGNAL_METRIC_POINTS, sc.SIGNAL_LOGS)
REASON_QUEUE_FULL: Final = "queue_full"
REASON_BUFFER_FULL: Final = "buffer_full"
REASON_REJECTED: Final = "rejected"
REASON_SHUTDOWN: Final = "shutdown"
REASON_ERROR: Final = "error"
DROP_REASONS: Final = (REASON_QUEUE_FULL, REASON_BUFFER_FULL, REASON_REJECTED, REASON_SHUTDOWN, REASON_ERROR)
# Not in SPEC §5's list, but what an SRE alerts on before drops start (TODO: move next to the others in _semconv).

# Python object overhead of one buffered batch (the _Batch, its bytes header, the deque slot), charged to the bound.
BATCH_OVERHEAD_BYTES: Final = 200
# Buffered batches of one signal are merged into requests of at most this many (uncompressed) bytes; well below
# the collector's default gRPC message limit (4 MiB).
MAX_REQUEST_BYTES: Final = 1024 * 1024
_MAX_BATCHES_PER_REQUEST: Final = 64
# Spans and log records come in batches of the SDK processor's size (512 by default), each encoded into a request
# of its own. Sending each alone costs a fixed ~0.2-0.3 ms of CPU per gRPC call (2.5 µs per request of a model
# server traced at 100%, benchmarks/README.md), so a batch waits up to LINGER_SECONDS for others to share its call,
# or until LINGER_BYTES are buffered. flush() and shutdown() do not wait, nor does a signal being retried.
LINGER_SECONDS: Final = 0.5
LINGER_BYTES: Final = MAX_REQUEST_BYTES // 2
# The sender thread's longest sleep: it re-checks what is due at least this often (any put() or flush() wakes it
# sooner). Also keeps Condition.wait() away from a timeout it cannot take (OverflowError past time_t).
_MAX_WAIT_SECONDS: Final = 60.0
# The retry delay when a backoff yields no usable one (NaN, infinite or negative; a misconfigured Backoff).
_FALLBACK_DELAY_SECONDS: Final = 5.0


# ---------------------------------------------------------------------------------------------------------------
# What a sender returns, and what the buffer needs of one.


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of one send attempt."""

    ok: bool
    retryable: bool = False
    retry_after: float | None = None  # the collector's throttling hint, seconds
    rejected: int = 0  # items refused by the collector in a partial success
    detail: str = ""  # for the log line: a gRPC code or HTTP status, never a payload

    @classmethod
    def success(cls, rejected: int = 0, detail: str = "") -> SendResult:
        return cls(ok=True, rejected=rejected, detail=detail)

    @classmethod
    def retry(cls, detail: str, retry_after: float | None = None) -> SendResult:
        return cls(ok=False, retryable=True, retry_after=retry_after, detail=detail)

    @classmethod
    def reject(cls, detail: str) -> SendResult:
        return cls(ok=False, detail=detail)


class Sender(Protocol):
    """One signal's transport: one attempt per call, never retrying by itself."""

    timeout: float

    def send(self, payload: bytes, timeout: float) -> SendResult: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...

    def reset_after_fork(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: failure n waits uniform(0.5, 1) * min(maximum, initial * 2**(n-1)) seconds."""

    initial: float = 0.5
    maximum: float = 5.0
    # A collector's Retry-After/RetryInfo is honoured up to this long, and at least this long: a collector
    # answering "Retry-After: 0" (or a date in the past) to every attempt must not get a retry loop with no pause.
    max_hint: float = 300.0
    min_hint: float = 0.5

    @staticmethod
    def usable_hint(hint: float | None) -> float | None:
        """The collector's hint if it is a delay at all (finite, not negative); None lets the backoff decide.

        A NaN would pass through ``min``/``max`` and make the signal's next attempt never due, and the sender
        thread's ``Condition.wait(nan)`` return at once: a thread spinning at 100% CPU that never exports again.
        """
        return hint if hint is not None and math.isfinite(hint) and hint >= 0.0 else None

    def delay(self, failures: int, hint: float | None) -> float:
        if (hint := self.usable_hint(hint)) is not None:
            return min(max(hint, self.min_hint), self.max_hint)
        ceiling = min(self.maximum, self.initial * 2 ** min(failures - 1, 30))
        return float(ceiling * random.uniform(0.5, 1.0))


@dataclass(frozen=True, slots=True)
class TelemetryStats:
    """obskit's accounting of one signal, in items: ``produced == exported + dropped_total + buffered``.

    Attributes:
        signal: ``"spans"``, ``"metric_points"`` or ``"logs"``.
        produced: Items handed to the export pipeline (sampled spans, log records, metric data points).
        exported: Items the collector accepted.
        dropped: Items dropped, by reason (``queue_full``, ``buffer_full``, ``rejected``, ``shutdown``, ``error``).
        buffered: Items still waiting (in the SDK processor's queue or in the export buffer, in flight included).
        buffered_bytes: Bytes of this signal's requests held in the export buffer.
    """

    signal: str
    produced: int
    exported: int
    dropped: Mapping[str, int]
    buffered: int
    buffered_bytes: int

    @property
    def dropped_total(self) -> int:
        """All dropped items, whatever the reason."""
        return sum(self.dropped.values())

    @property
    def balanced(self) -> bool:
        """Whether produced = exported + dropped + buffered (always true unless obskit has a bug)."""
        return self.produced == self.exported + self.dropped_total + self.buffered


@dataclass(slots=True)
class _Batch:
    signal: str
    payload: bytes
    items: int
    size: int  # payload + overhead, what counts against the bound
    seq: int  # arrival order across signals: the smallest is the oldest
    at: float = 0.0  # time.monotonic() when buffered


@dataclass(slots=True)
class _Flight:
    signal: str
    batches: list[_Batch]
    items: int
    size: int


@dataclass(slots=True)
class _SdkCounts:
    refused: int  # produced after the processor shut down
    overflowed: int  # pushed out of the processor's full queue
    queued: int


class _SignalState:
    __slots__ = ("accepted", "bytes", "dropped", "exported", "failing_since", "failures", "hinted", "items", "queue")

    def __init__(self) -> None:
        self.queue: deque[_Batch] = deque()
        self.items = 0  # buffered items, in flight included
        self.bytes = 0
        self.accepted = 0  # items handed to the buffer by an exporter (entering it, or dropped right away)
        self.exported = 0
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.failures = 0  # consecutive failed attempts
        self.hinted = False  # the current wait was asked for by the collector
        self.failing_since: float | None = None


class _QueueProbe(Protocol):
    def hold(self) -> Any: ...  # a context manager yielding _SdkCounts with the processor's queue frozen


# ---------------------------------------------------------------------------------------------------------------


class ExportBuffer:
    """Holds encoded OTLP requests while the collector is away; one sender thread sends them.

    Args:
        senders: One sender per signal that exports over OTLP (``"spans"``, ``"metric_points"``, ``"logs"``).
        max_bytes: The memory bound shared by the signals (OBSKIT_EXPORT_BUFFER_BYTES).
        backoff: Retry schedule while the collector is away.
        max_request_bytes: Upper bound of a merged request.
        linger: Per signal, how long a batch may wait for more to share its request (see ``LINGER_SECONDS``).
        linger_bytes: A signal with this many bytes buffered is sent without waiting.
    """

    def __init__(
        self,
        senders: Mapping[str, Sender],
        *,
        max_bytes: int,
        backoff: Backoff | None = None,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        linger: Mapping[str, float] | None = None,
        linger_bytes: int = LINGER_BYTES,
    ) -> None:
        unknown = set(senders) - set(SIGNALS)
        if unknown:
            raise ValueError(f"unknown signal(s) {sorted(unknown)}; expected {SIGNALS}")
        self._senders = dict(senders)
        self.max_bytes = max_bytes
        self._backoff = backoff or Backoff()
        self._max_request_bytes = max_request_bytes
        self._linger = {signal: seconds for signal, seconds in (linger or {}).items() if seconds > 0}
        self._linger_bytes = linger_bytes
        self._probes: dict[str, _QueueProbe] = {}
        self._init_state()
        self._closed = False  # shutdown() began: no new data, drain until the deadline
        self._stopped = False  # shutdown() ended: the sender thread exits
        self._deadline: float | None = None
        self._start_thread()
        if hasattr(os, "register_at_fork"):
            weak = weakref.WeakMethod(self._after_fork_in_child)

            def after_in_child() -> None:
                method = weak()
                if method is not None:
                    method()

            os.register_at_fork(after_in_child=after_in_child)

    def _init_state(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._flushing = 0  # flush() calls waiting: nothing lingers meanwhile (none in a forked child)
        self._state = {signal: _SignalState() for signal in self._senders}
        self._ready_at = dict.fromkeys(self._senders, 0.0)
        self._bytes = 0
        self._seq = 0
        self._in_flight: _Flight | None = None
        self._thread: threading.Thread | None = None

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="obskit-export", daemon=True)
        self._thread.start()

    @property
    def signals(self) -> tuple[str, ...]:
        """The signals this buffer exports."""
        return tuple(self._senders)

    def attach_queue(self, signal: str, probe: _QueueProbe) -> None:
        """Make an SDK batch processor's queue part of ``signal``'s accounting."""
        self._probes[signal] = probe

    # -- producers ---------------------------------------------------------------------------------------------

    def put(self, signal: str, payload: bytes, items: int) -> None:
        """Buffer one encoded request of ``items`` items; drops the oldest data past the bound. Never blocks long."""
        if items <= 0:
            return
        evicted = 0
        with self._cond:
            state = self._state[signal]
            state.accepted += items
            if self._closed:
                state.dropped[REASON_SHUTDOWN] += items
                return
            size = len(payload) + BATCH_OVERHEAD_BYTES
            self._seq += 1
            state.queue.append(_Batch(signal, payload, items, size, self._seq, time.monotonic()))
            state.items += items
            state.bytes += size
            self._bytes += size
            evicted = self._enforce_bound_locked()
            self._cond.notify_all()
        if evicted:
            _safety.log_once(
                "export-buffer-full",
                "obskit export buffer is full (%s bytes, OBSKIT_EXPORT_BUFFER_BYTES): dropping the oldest telemetry; "
                "drops are counted in obskit.telemetry.dropped{obskit.reason=buffer_full}",
                self.max_bytes,
            )

    def drop(self, signal: str, reason: str, items: int) -> None:
        """Count items an exporter handed over but could not buffer (say, a batch that failed to encode)."""
        with self._cond:
            state = self._state[signal]
            state.accepted += items
            state.dropped[reason] += items

    def _enforce_bound_locked(self) -> int:
        evicted = 0
        while self._bytes > self.max_bytes:
            oldest: _Batch | None = None
            for state in self._state.values():
                if state.queue and (oldest is None or state.queue[0].seq < oldest.seq):
                    oldest = state.queue[0]
            if oldest is None:  # only the request in flight is left
                break
            state = self._state[oldest.signal]
            state.queue.popleft()
            self._forget_locked(state, oldest.items, oldest.size)
            state.dropped[REASON_BUFFER_FULL] += oldest.items
            evicted += oldest.items
        return evicted

    def _forget_locked(self, state: _SignalState, items: int, size: int) -> None:
        state.items -= items
        state.bytes -= size
        self._bytes -= size

    # -- the sender thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                flight = self._next_flight()
                if flight is None:
                    return
                self._attempt(flight)
            except Exception as exc:  # a bug here must not kill the only thread that exports
                _safety.record_internal_error("export buffer", exc)
                with self._cond:
                    self._cond.wait(0.5)

    def _next_flight(self) -> _Flight | None:
        with self._cond:
            while True:
                if self._stopped:
                    return None
                now = time.monotonic()
                signal = self._ready_signal_locked(now)
                if signal is not None:
                    return self._take_locked(signal)
                self._cond.wait(self._wait_time_locked(now))

    def _ready_signal_locked(self, now: float) -> str | None:
        best: tuple[int, str] | None = None
        for signal, state in self._state.items():
            if (
                state.queue
                and self._ready_at[signal] <= now
                and (best is None or state.queue[0].seq < best[0])
                and self._linger_until_locked(signal, state) <= now
            ):
                best = (state.queue[0].seq, signal)
        return None if best is None else best[1]

    def _linger_until_locked(self, signal: str, state: _SignalState) -> float:
        """When the signal's oldest batch stops waiting for others to share its request (0: it does not wait)."""
        linger = self._linger.get(signal)
        if linger is None or state.failures or self._flushing or self._closed:
            return 0.0
        if sum(batch.size for batch in state.queue) >= self._linger_bytes:
            return 0.0
        return state.queue[0].at + linger

    def _wait_time_locked(self, now: float) -> float | None:
        waits = [
            max(self._ready_at[s], self._linger_until_locked(s, state)) - now
            for s, state in self._state.items()
            if state.queue
        ]
        if not waits:
            return None
        wait = min(waits)
        if not wait <= _MAX_WAIT_SECONDS:  # NaN included: wait(nan) would return at once, a busy loop
            return _MAX_WAIT_SECONDS
        return max(wait, 0.001)

    def _take_locked(self, signal: str) -> _Flight:
        state = self._state[signal]
        queue = state.queue
        batches = [queue.popleft()]
        total = len(batches[0].payload)
        # While the collector is failing, one batch probes it: a request in flight cannot be dropped, and a large
        # one would leave the newest data to be dropped instead of the oldest.
        limit = 1 if state.failures else _MAX_BATCHES_PER_REQUEST
        while queue and len(batches) < limit and total + len(queue[0].payload) <= self._max_request_bytes:
            total += len(queue[0].payload)
            batches.append(queue.popleft())
        flight = _Flight(signal, batches, sum(b.items for b in batches), sum(b.size for b in batches))
        self._in_flight = flight
        return flight

    def _attempt(self, flight: _Flight) -> None:
        sender = self._senders[flight.signal]
        timeout = sender.timeout
        deadline = self._deadline
        if deadline is not None:
            timeout = max(0.01, min(timeout, deadline - time.monotonic()))
        payload = flight.batches[0].payload if len(flight.batches) == 1 else b"".join(b.payload for b in flight.batches)
        try:
            result = sender.send(payload, timeout)
        except Exception as exc:  # a broken sender: the same batch would fail again, so it is not retried
            _safety.record_internal_error(f"export {flight.signal}", exc)
            result = SendResult.reject(f"internal error {type(exc).__name__}")
            self._resolve(flight, result, reason=REASON_ERROR)
            return
        self._resolve(flight, result)

    def _resolve(self, flight: _Flight, result: SendResult, reason: str = REASON_REJECTED) -> None:
        log: Callable[[], None] | None = None
        with self._cond:
            if self._in_flight is not flight:  # written off by shutdown() meanwhile
                return
            self._in_flight = None
            signal = flight.signal
            state = self._state[signal]
            now = time.monotonic()
            if result.ok:
                rejected = min(max(result.rejected, 0), flight.items)
                state.exported += flight.items - rejected
                state.dropped[REASON_REJECTED] += rejected
                self._forget_locked(state, flight.items, flight.size)
                if state.failing_since is not None:
                    log = self._recovered_log(signal, now - state.failing_since, state.items)
                state.failures, state.hinted, state.failing_since = 0, False, None
                self._ready_at[signal] = now
                if rejected:
                    log = self._partial_log(signal, rejected, result.detail)
            elif result.retryable:
                state.queue.extendleft(reversed(flight.batches))
                state.failures += 1
                hint = self._backoff.usable_hint(result.retry_after)
                state.hinted = hint is not None
                delay = self._backoff.delay(state.failures, hint)
                if not 0.0 <= delay < math.inf:  # a NaN deadline never comes: the thread would wait for ever
                    delay = _FALLBACK_DELAY_SECONDS
                self._ready_at[signal] = now + delay
                if state.failing_since is None:
                    state.failing_since = now
                    log = self._failing_log(signal, result.detail)
                self._enforce_bound_locked()
            else:
                state.dropped[reason] += flight.items
                self._forget_locked(state, flight.items, flight.size)
                if reason == REASON_REJECTED:  # an internal error was logged where it happened
                    log = self._rejected_log(signal, result.detail)
        if log is not None:  # outside the lock; before waking flush() so that a caller sees it logged
            log()
        with self._cond:
            self._cond.notify_all()

    def _failing_log(self, signal: str, detail: str) -> Callable[[], None]:
        sender = self._senders[signal]
        return lambda: _logger.warning(
            "obskit cannot export %s to %s (%s); keeping them in the export buffer (up to %s bytes) and retrying",
            signal,
            sender.describe(),
            detail,
            self.max_bytes,
        )

    def _recovered_log(self, signal: str, outage: float, waiting: int) -> Callable[[], None]:
        sender = self._senders[signal]
        return lambda: _logger.info(
            "obskit export of %s to %s resumed after %.1fs (%d items still buffered)",
            signal,
            sender.describe(),
            outage,
            waiting,
        )

    def _rejected_log(self, signal: str, detail: str) -> Callable[[], None]:
        sender = self._senders[signal]
        return lambda: _safety.log_once(
            f"export-rejected:{signal}",
            "obskit: %s rejected a %s export (%s); the batch is dropped (obskit.telemetry.dropped"
            "{obskit.reason=rejected}; further rejections are counted, not logged)",
            sender.describe(),
            signal,
            detail,
        )

    def _partial_log(self, signal: str, rejected: int, detail: str) -> Callable[[], None]:
        return lambda: _safety.log_once(
            f"export-partial:{signal}",
            "obskit: the collector refused %d %s of an export (%s); further ones are counted, not logged",
            rejected,
            signal,
            detail or "partial success",
        )

    # -- flush, shutdown, fork ---------------------------------------------------------------------------------

    def _pending_locked(self) -> bool:
        return self._in_flight is not None or any(state.queue for state in self._state.values())

    def _retry_now_locked(self) -> None:
        now = time.monotonic()
        for signal, state in self._state.items():
            if not state.hinted:  # a collector's explicit Retry-After is still honoured
                self._ready_at[signal] = min(self._ready_at[signal], now)
        self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Send what is buffered now (skipping our own backoff once); wait at most ``timeout`` seconds.

        Returns:
            True when nothing is left in the buffer.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            self._flushing += 1
            try:
                self._retry_now_locked()
                while self._pending_locked():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stopped:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._flushing -= 1

    def shutdown(self, timeout: float) -> bool:
        """Drain within ``timeout`` seconds, then drop (and count) what is left and stop the sender thread.

        Idempotent. Data put after this began is dropped as ``shutdown``.

        Returns:
            True when everything buffered was exported or rejected in time, none left behind.
        """
        with self._cond:
            if self._closed:
                return not self._pending_locked()
            self._closed = True
            self._deadline = deadline = time.monotonic() + max(timeout, 0.0)
            self._retry_now_locked()
            while self._pending_locked():
                now = time.monotonic()
                remaining = deadline - now
                nothing_more = self._in_flight is None and all(
                    not state.queue or self._ready_at[signal] >= deadline for signal, state in self._state.items()
                )
                if remaining <= 0 or nothing_more:
                    break
                self._cond.wait(remaining)
            left = self._write_off_locked()
            self._stopped = True
            self._cond.notify_all()
        for sender in self._senders.values():
            with _safety.swallow_errors("export shutdown"):
                sender.close()
        if left:
            _logger.warning(
                "obskit shutdown: %d telemetry items could not be exported within OBSKIT_SHUTDOWN_TIMEOUT "
                "(%.1fs) and were dropped",
                left,
                timeout,
            )
        return left == 0

    def _write_off_locked(self) -> int:
        left = 0
        flight, self._in_flight = self._in_flight, None
        if flight is not None:
            state = self._state[flight.signal]
            state.dropped[REASON_SHUTDOWN] += flight.items
            self._forget_locked(state, flight.items, flight.size)
            left += flight.items
        for state in self._state.values():
            while state.queue:
                batch = state.queue.popleft()
                state.dropped[REASON_SHUTDOWN] += batch.items
                self._forget_locked(state, batch.items, batch.size)
                left += batch.items
        return left

    def _after_fork_in_child(self) -> None:
        # The parent's buffered data stays the parent's to send: the child starts empty, with fresh locks (one
        # may have been held by the parent's sender thread at fork time), fresh counters, fresh connections and
        # its own sender thread.
        self._init_state()
        for sender in self._senders.values():
            sender.reset_after_fork()
        if not self._stopped:
            self._start_thread()

    # -- accounting --------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, TelemetryStats]:
        """A consistent snapshot of every signal's accounting."""
        with ExitStack() as stack:
            sdk: dict[str, _SdkCounts] = {}
            # Always in the same order (spans, then logs), so two snapshots can never wait on each other.
            for signal in SIGNALS:
                if (probe := self._probes.get(signal)) is not None:
                    sdk[signal] = stack.enter_context(probe.hold())
            with self._cond:
                return {signal: self._stats_locked(signal, sdk.get(signal)) for signal in self._state}

    def _stats_locked(self, signal: str, sdk: _SdkCounts | None) -> TelemetryStats:
        state = self._state[signal]
        dropped = dict(state.dropped)
        buffered = state.items
        produced = state.accepted
        if sdk is not None:
            queued = sdk.queued
            # Every item the processor got is in its queue, handed over to this buffer, refused or pushed out.
            produced = state.accepted + queued + sdk.refused + sdk.overflowed
            dropped[REASON_SHUTDOWN] += sdk.refused
            dropped[REASON_QUEUE_FULL] += sdk.overflowed
            if self._stopped:  # the processor gave up on these at shutdown
                dropped[REASON_SHUTDOWN] += queued
                queued = 0
            buffered += queued
        return TelemetryStats(signal, produced, state.exported, dropped, buffered, state.bytes)

    @property
    def used_bytes(self) -> int:
        """Bytes currently held (the bound applies to this)."""
        return self._bytes


# ---------------------------------------------------------------------------------------------------------------
# SDK-facing exporters: encode, buffer, return at once.


def _span_payload(spans: Sequence[Any]) -> bytes:
    """The OTLP request of a batch: spans, or the ``EndedSpan`` tuples the span processor queued for them.

    We write the OTLP bytes ourselves: the SDK's encoder builds a protobuf object per span, attribute and value,
    ~33 µs of CPU per span against ~2 µs (benchmarks/bench_encode.py, 512 realistic spans, 2-core machine),
    background CPU that competes with requests. The output is byte-identical (tests/test_otlp_trace.py); a
    batch holding anything _otlp_trace does not handle is encoded by the SDK's encoder instead.
    """
    from ._otlp_trace import UnsupportedSpanData, encode_spans

    try:
        return encode_spans(spans)
    except UnsupportedSpanData:
        return _sdk_span_payload(spans)


def _sdk_span_payload(items: Sequence[Any]) -> bytes:
    """The SDK encoder's request (its grouping, its messages), for spans and ``EndedSpan`` items."""
    from opentelemetry.exporter.otlp.proto.common._internal import _encode_instrumentation_scope, _encode_resource
    from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _encode_span
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

    from ._otlp_trace import as_readable

    groups: dict[Any, dict[Any, list[PbSpan]]] = {}
    for item in items:
        span = as_readable(item) if type(item) is tuple else item
        groups.setdefault(span.resource, {}).setdefault(span.instrumentation_scope or None, []).append(
            _encode_span(span)
        )
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=_encode_resource(resource),
                scope_spans=[
                    ScopeSpans(
                        scope=_encode_instrumentation_scope(scope),
                        spans=spans,
                        schema_url=scope.schema_url if scope else None,  # type: ignore[arg-type]  # as the SDK
                    )
                    for scope, spans in scopes.items()
                ],
                schema_url=resource.schema_url,
            )
            for resource, scopes in groups.items()
        ]
    )
    return bytes(request.SerializeToString())


def _log_payload(batch: Sequence[ReadableLogRecord]) -> bytes:
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

    return bytes(encode_logs(batch).SerializeToString())


def _metric_payload(data: MetricsData) -> bytes:
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    return bytes(encode_metrics(data).SerializeToString())


def count_points(data: MetricsData) -> int:
    """Data points in an export: the unit of the ``metric_points`` signal."""
    return sum(
        len(metric.data.data_points)
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    )


def _enqueue(buffer: ExportBuffer, signal: str, items: int, encode: Callable[[], bytes]) -> bool:
    try:
        payload = encode()
    except Exception as exc:  # an unencodable batch (a bug) is dropped and counted, never raised into the SDK
        _safety.record_internal_error(f"encode {signal}", exc)
        buffer.drop(signal, REASON_ERROR, items)
        return False
    buffer.put(signal, payload, items)
    return True


class BufferedSpanExporter(SpanExporter):
    """Encodes each batch of spans into an OTLP request and buffers it; the buffer's thread sends it."""

    def __init__(self, buffer: ExportBuffer) -> None:
        self.buffer = buffer

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        ok = _enqueue(self.buffer, sc.SIGNAL_SPANS, len(spans), lambda: _span_payload(spans))
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        """Nothing to do: the buffer is drained by ``Handle.shutdown`` once every provider has handed over."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.buffer.flush(timeout_millis / 1000)


class BufferedLogExporter(LogRecordExporter):
    """Encodes each batch of log records into an OTLP request and buffers it."""

    def __init__(self, buffer: ExportBuffer) -> None:
        self.buffer = buffer

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        ok = _enqueue(self.buffer, sc.SIGNAL_LOGS, len(batch), lambda: _log_payload(batch))
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def shutdown(self) -> None:
        """Nothing to do: see ``BufferedSpanExporter.shutdown``."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.buffer.flush(timeout_millis / 1000)


class BufferedMetricExporter(MetricExporter):
    """Encodes each collection into an OTLP request and buffers it.

    Temporality is cumulative for every instrument (the OTLP default): each export carries running totals, so a
    dropped or late export costs resolution, never counts. Every data point of an export is one item in the
    accounting, exported once when its request is accepted (a retried request is not counted twice).
    """

    def __init__(self, buffer: ExportBuffer) -> None:
        super().__init__()
        self.buffer = buffer

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        ok = _enqueue(
            self.buffer, sc.SIGNAL_METRIC_POINTS, count_points(metrics_data), lambda: _metric_payload(metrics_data)
        )
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.buffer.flush(timeout_millis / 1000)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Nothing to do: see ``BufferedSpanExporter.shutdown``."""


# ---------------------------------------------------------------------------------------------------------------
# SDK batch processors whose queue is part of the accounting.


# A put() appends without the lock while the queue is shorter than its bound by this much: room for as many threads
# to be past the length check at once without a silent (uncounted) push-out of the deque's oldest item.
_UNLOCKED_MARGIN: Final = 64


@dataclass
class _SdkQueue:
    """Counts what leaves one SDK ``BatchProcessor`` other than through its exporter, for a consistent snapshot.

    What the processor got is not counted as it comes (a lock per item, four per request): it is derived, at a
    snapshot, as what is queued + what was handed over to the buffer + what was refused after shutdown + what
    overflowed the queue. The last two are counted here, under the lock, on the slow path that alone can meet them.
    """

    processor: Any  # opentelemetry.sdk._shared_internal.BatchProcessor (private in the SDK)
    refused: int = 0
    overflowed: int = 0
    # Below this queue length an item can neither fill a batch (which wakes the worker) nor overflow the queue.
    unlocked_below: int = field(init=False, default=0)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        processor = self.processor
        self.unlocked_below = min(processor._max_export_batch_size - 1, processor._max_queue_size - _UNLOCKED_MARGIN)
        if hasattr(os, "register_at_fork"):
            weak = weakref.ref(self)

            def after_in_child() -> None:
                queue = weak()
                if queue is not None:  # the SDK clears its queue in the child: so do our counters
                    queue._lock = threading.Lock()
                    queue.refused = queue.overflowed = 0

            os.register_at_fork(after_in_child=after_in_child)

    def emit(self, forward: Callable[[Any], None], item: Any) -> None:
        """Hand ``item`` to ``forward`` (the SDK processor's own hook, which enqueues it), counting what it drops."""
        with self._lock:
            processor = self.processor
            if processor._shutdown:
                self.refused += 1
                return
            if len(processor._queue) >= processor._max_queue_size:
                self.overflowed += 1  # the deque pushes its oldest out
            forward(item)

    def put(self, item: Any) -> None:
        """Enqueue ``item`` as the SDK's ``BatchProcessor.emit`` would (spans: four per request)."""
        processor = self.processor
        queue = processor._queue
        if len(queue) < self.unlocked_below and not processor._shutdown:
            # Far from a full batch: what BatchProcessor.emit does then, without its per-item getpid() (the SDK
            # also re-initialises the processor in a forked child through os.register_at_fork). Atomic.
            queue.appendleft(item)
        else:
            self.emit(processor.emit, item)

    @contextmanager
    def hold(self) -> Iterator[_SdkCounts]:
        # The export lock is held by the SDK worker from popping a batch until our exporter has buffered it; an
        # unlocked put() appends or not before the queue's length is read, either way consistently.
        with self.processor._export_lock, self._lock:
            yield _SdkCounts(self.refused, self.overflowed, len(self.processor._queue))


class AccountedBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's BatchSpanProcessor, with its queue (and its overflow) in obskit's accounting."""

    def __init__(self, exporter: BufferedSpanExporter, **kwargs: Any) -> None:
        super().__init__(exporter, **kwargs)
        self._account = _SdkQueue(self._batch_processor)
        exporter.buffer.attach_queue(sc.SIGNAL_SPANS, self._account)

    def on_end(self, span: ReadableSpan) -> None:
        # A lean span's context without the ReadableSpan.context property call (four spans per request).
        context = span._context if type(span) is _LeanSpan else span.context
        if not (context and context[_TRACE_FLAGS] & 1):  # sampled
            return
        # What BatchSpanProcessor.on_end does past the sampled check, counted. What is queued is the span's data
        # as a tuple the garbage collector does not track (_otlp_trace.ended): a span kept until its batch is
        # exported made full collections frequent, each a pause of tens of milliseconds in some request.
        try:
            item: Any = ended(span)
        except Exception:  # anything unexpected: the span itself, as the SDK queues it
            item = None
        self._account.put(span if item is None else item)


class AccountedBatchLogRecordProcessor(BatchLogRecordProcessor):
    """The SDK's BatchLogRecordProcessor, with its queue (and its overflow) in obskit's accounting."""

    def __init__(self, exporter: BufferedLogExporter, **kwargs: Any) -> None:
        super().__init__(exporter, **kwargs)
        self._account = _SdkQueue(self._batch_processor)
        exporter.buffer.attach_queue(sc.SIGNAL_LOGS, self._account)

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        self._account.emit(super().on_emit, log_record)
