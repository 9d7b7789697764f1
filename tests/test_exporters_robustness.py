"""Collectors that misbehave at the protocol level, against obskit's real senders and export buffer.

Each test stands a real server on 127.0.0.1 between obskit and the project's OTLP receiver: it answers the first
exports badly (a nonsensical retry hint, an unparsable RetryInfo, a huge or trickling body), then forwards to the
receiver, so what arrives is what obskit really sent.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from opentelemetry import trace

import obskit
from obskit import _safety
from obskit._buffer import Backoff
from obskit._exporters import MAX_RESPONSE_BYTES, HttpSender, _http_retry_after
from obskit.testing import OtlpReceiver

# ---------------------------------------------------------------------------------------------------------------
# HTTP: a collector that throttles with a Retry-After that is no delay at all.


class _ThrottlingCollector:
    """Answers ``status`` with ``Retry-After: hint`` until released, then forwards every export to ``target``."""

    def __init__(self, target: str, status: int, hint: str) -> None:
        self.throttled = 0
        self.answered = threading.Event()  # at least one throttling answer went out
        self.released = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not outer.released:
                    self.send_response(status)
                    self.send_header("Retry-After", hint)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    outer.throttled += 1
                    outer.answered.set()
                    return
                request = urllib.request.Request(
                    target + self.path,
                    data=body,
                    headers={"Content-Type": self.headers.get("Content-Type", "application/x-protobuf")},
                )
                with urllib.request.urlopen(request, timeout=5) as answer:
                    content = answer.read()
                    self.send_response(answer.status)
                    self.send_header("Content-Type", answer.headers.get("Content-Type", ""))
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _export_thread_cpu_seconds() -> float:
    """CPU time (user + system) of obskit's sender thread so far, from /proc (Linux)."""
    (thread,) = [t for t in threading.enumerate() if t.name == "obskit-export"]
    with open(f"/proc/self/task/{thread.native_id}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


@pytest.mark.parametrize(
    ("status", "hint"), [(429, "nan"), (503, "NaN"), (429, "inf"), (503, "1e400"), (429, "-5"), (429, "-inf")]
)
def test_a_retry_after_that_is_no_delay_falls_back_to_backoff_and_export_resumes(
    receiver: OtlpReceiver, status: int, hint: str
) -> None:
    """``Retry-After: nan`` (or inf, or negative) is ignored: no busy sender thread, and export resumes."""
    collector = _ThrottlingCollector(receiver.http_endpoint, status, hint)
    try:
        handle = obskit.init(
            endpoint=collector.endpoint,
            protocol="http/protobuf",
            metrics_exporter="none",
            logs_exporter="none",
            system_metrics=False,
        )
        trace.get_tracer("t").start_span("throttled").end()
        assert handle.tracer_provider is not None
        handle.tracer_provider.force_flush()  # into the export buffer; the sender thread takes it from there
        assert collector.answered.wait(10), "the collector was never asked"
        # The collector keeps throttling: the sender thread must sleep on its backoff, not spin. Over this window
        # a spinning thread burns about a CPU-second per second; one waiting on its backoff, a few milliseconds.
        window = 1.5
        before = _export_thread_cpu_seconds()
        time.sleep(window)  # the measurement window itself, not a synchronisation
        busy = _export_thread_cpu_seconds() - before
        assert busy < 0.25 * window, f"obskit's sender thread used {busy:.2f}s of CPU in {window}s while idle"

        collector.released = True
        assert handle.force_flush(10)
        assert [s.name for s in receiver.spans("throttled")] == ["throttled"]
        stats = handle.telemetry_stats()["spans"]
        assert (stats.exported, stats.dropped_total, stats.buffered) == (1, 0, 0)
        assert handle.shutdown(5)
    finally:
        collector.close()


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e400", "-5", "-0.5", "soon"])
def test_retry_after_values_that_are_no_delay_are_no_hint(value: str) -> None:
    assert _http_retry_after(value) is None


def test_usable_retry_hints_are_honoured_up_to_the_cap() -> None:
    assert _http_retry_after(" 7 ") == 7.0
    assert _http_retry_after("0") == 0.0
    backoff = Backoff(initial=0.5, maximum=5.0, max_hint=300.0)
    assert backoff.delay(1, 7.0) == 7.0
    assert backoff.delay(1, 1e12) == 300.0  # an absurd hint is capped
    for bad in (math.nan, math.inf, -1.0):  # not a hint: the normal backoff (first failure: 0.25-0.5 s)
        assert 0.25 <= backoff.delay(1, bad) <= 0.5


# ---------------------------------------------------------------------------------------------------------------
# gRPC: a collector asking for a retry with an unparsable RetryInfo.


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_an_unparsable_grpc_retry_info_is_no_hint_and_the_batch_is_retried(
    receiver: OtlpReceiver, code: grpc.StatusCode, swallowing: None
) -> None:
    """UNAVAILABLE/RESOURCE_EXHAUSTED with garbage in ``google.rpc.retryinfo-bin``: retried, not dropped."""
    target = receiver.grpc_endpoint.partition("://")[2]
    upstream = grpc.insecure_channel(target)
    failures_left = [2]
    lock = threading.Lock()

    class Handler(grpc.GenericRpcHandler):
        def service(self, details: Any) -> Any:
            method = details.method
            forward = upstream.unary_unary(method, request_serializer=None, response_deserializer=None)

            def unary(request: bytes, context: Any) -> bytes:
                with lock:
                    fail = failures_left[0] > 0
                    failures_left[0] -= fail
                if fail:
                    context.set_trailing_metadata((("google.rpc.retryinfo-bin", b"\xff\xff\xff\xff"),))
                    context.abort(code, "restarting")
                return bytes(forward(request, timeout=5))

            return grpc.unary_unary_rpc_method_handler(unary, request_deserializer=None, response_serializer=None)

    server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[Handler()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        errors = _safety.internal_error_count()
        handle = obskit.init(
            endpoint=f"http://127.0.0.1:{port}",
            protocol="grpc",
            metrics_exporter="none",
            logs_exporter="none",
            system_metrics=False,
        )
        for _ in range(5):
            trace.get_tracer("t").start_span("retried").end()
        assert handle.force_flush(15)
        stats = handle.telemetry_stats()["spans"]
        assert stats.dropped == dict.fromkeys(stats.dropped, 0)  # not dropped as an internal error
        assert (stats.exported, stats.buffered) == (5, 0)
        assert failures_left[0] == 0  # both failures were answered, then the retry went through
        assert len(receiver.spans("retried")) == 5
        assert _safety.internal_error_count() == errors
        assert handle.shutdown(5)
    finally:
        server.stop(None)
        upstream.close()


# ---------------------------------------------------------------------------------------------------------------
# HTTP: a 200 whose body is huge, or trickles.


class _RawHttpCollector:
    """Answers each POST with 200 and ``body_size`` bytes of protobuf body, written by ``write(conn, size)``."""

    def __init__(self, body_size: int, write: Callable[[socket.socket, int, threading.Event], int]) -> None:
        self.body_size = body_size
        self.sent = 0  # body bytes the collector managed to write before the client went away
        self.done = threading.Event()
        self.stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._write = write
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1/traces"

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        with conn:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            )
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                + f"Content-Length: {self.body_size}\r\n\r\n".encode()
            )
            try:
                self._write(conn, self.body_size, self.stop)
            except OSError:
                pass
            finally:
                self.done.set()

    def close(self) -> None:
        self.stop.set()
        self._listener.close()
        self._thread.join(5)


@pytest.fixture
def raw_collector() -> Iterator[Callable[..., _RawHttpCollector]]:
    made: list[_RawHttpCollector] = []

    def make(body_size: int, write: Callable[[socket.socket, int, threading.Event], int]) -> _RawHttpCollector:
        collector = _RawHttpCollector(body_size, write)
        made.append(collector)
        return collector

    yield make
    for collector in made:
        collector.close()


def _sender(url: str) -> HttpSender:
    return HttpSender(
        "spans",
        url=url,
        headers=None,
        timeout=10.0,
        gzip_body=False,
        certificate=None,
        client_key=None,
        client_certificate=None,
    )


def test_a_huge_success_body_is_not_read_past_the_bound(raw_collector: Callable[..., _RawHttpCollector]) -> None:
    """A 200 with a 64 MiB body (generated as it is sent): the sender stops reading past MAX_RESPONSE_BYTES.

    The signal is what the collector could write before obskit closed the connection: the bound plus what the
    two kernels' socket buffers absorb, never the whole body.
    """
    size = 64 * 1024 * 1024
    collector: _RawHttpCollector

    def write(conn: socket.socket, size: int, stop: threading.Event) -> int:
        chunk = b"\x00" * 65536
        while collector.sent < size and not stop.is_set():
            conn.sendall(chunk)
            collector.sent += len(chunk)
        return collector.sent

    collector = raw_collector(size, write)
    sender = _sender(collector.url)
    try:
        result = sender.send(b"", 10.0)
    finally:
        sender.close()
    # 2xx is success (OTLP); a body too large to be a partial-success response carries no refusal details.
    assert (result.ok, result.rejected) == (True, 0)
    assert collector.done.wait(10), "the collector is still writing: the connection was not closed"
    assert collector.sent < size // 2
    assert collector.sent <= MAX_RESPONSE_BYTES + 16 * 1024 * 1024  # the bound plus socket buffers


def test_a_trickling_success_body_does_not_hold_the_sender_past_its_timeout(
    raw_collector: Callable[..., _RawHttpCollector],
) -> None:
    """A 200 whose body comes a byte at a time, each well within the per-read timeout: the attempt still ends."""

    def write(conn: socket.socket, size: int, stop: threading.Event) -> int:
        sent = 0
        while sent < size and not stop.wait(0.05):  # the collector's pace, not a synchronisation
            conn.sendall(b"\x00")
            sent += 1
        return sent

    collector = raw_collector(10**6, write)
    sender = _sender(collector.url)
    outcome: list[Any] = []
    worker = threading.Thread(target=lambda: outcome.append(sender.send(b"", 1.0)), daemon=True)
    try:
        worker.start()
        worker.join(15)  # 15x the attempt's timeout: the old behaviour is ~14 hours at this pace
        assert not worker.is_alive(), "the sender is still reading a trickling body past its timeout"
        assert len(outcome) == 1
        assert outcome[0].ok
        assert collector.done.wait(5)  # obskit closed the connection: the collector's write failed
    finally:
        collector.stop.set()
        worker.join(5)
        sender.close()
