"""Never hurt the host: real servers against a collector that is down, restarting, black-holing, slow or refusing.

Each scenario measures what docs/reliability.md reports. Set OBSKIT_RELIABILITY_REPORT=path to append the figures
as JSON lines. The 30-second restart at 100 requests/s takes about a minute per protocol.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from obskit.testing import OtlpReceiver

from ._servers import Server, free_port, gunicorn, serve, telemetry_env, uvicorn

pytestmark = pytest.mark.e2e
APP = "tests.e2e.apps.reliability_app:app"
BODY = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
PREDICT = "POST /predict"
EXPORT_TIMEOUT_MS = 2000
# Generous (CI noise; the receiver shares the test process): a request that waited on the exporter would take
# the export timeout (2 s), several hundred times the baseline.
LATENCY_RATIO = 5.0


# Read at import: the autouse isolation fixture removes every OBSKIT_* variable while a test runs.
_REPORT_PATH = os.environ.get("OBSKIT_RELIABILITY_REPORT")


def _report(scenario: str, **figures: Any) -> None:
    line = json.dumps({"scenario": scenario, **figures}, sort_keys=True)
    print(line)
    path = _REPORT_PATH
    if path:
        with open(path, "a") as out:
            out.write(line + "\n")


def _env(rx: OtlpReceiver, protocol: str, **extra: str) -> dict[str, str]:
    endpoint = rx.grpc_endpoint if protocol == "grpc" else rx.http_endpoint
    settings = {
        "OTEL_EXPORTER_OTLP_TIMEOUT": str(EXPORT_TIMEOUT_MS),
        "OBSKIT_EXCLUDED_URLS": "^/healthz$,^/stats$",
        "OBSKIT_SYSTEM_METRICS": "false",
    }
    settings.update(extra)
    return telemetry_env(endpoint, protocol, **settings)


def _load(client: httpx.Client, n: int) -> list[float]:
    """``n`` sequential requests; each must succeed. Returns their latencies in seconds."""
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.post("/predict", json=BODY)
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return latencies


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def _assert_unaffected(phase: list[float], baseline: list[float], what: str) -> None:
    assert statistics.median(phase) <= LATENCY_RATIO * statistics.median(baseline), (what, _ms(phase), _ms(baseline))
    assert max(phase) < EXPORT_TIMEOUT_MS / 1000, (what, "a request waited on the exporter", _ms(phase))


def _terminate(srv: Server, timeout: float = 15.0) -> float:
    """SIGTERM the server; return how long it took to exit.

    uvicorn re-raises SIGTERM once it has shut down gracefully, so its exit status is -SIGTERM; gunicorn exits 0.
    """
    started = time.monotonic()
    code = srv.terminate(timeout)
    elapsed = time.monotonic() - started
    assert code in (0, -signal.SIGTERM), (code, srv.log()[-2000:])
    return elapsed


def _stats(client: httpx.Client) -> dict[str, Any]:
    data: dict[str, Any] = client.get("/stats").json()
    return data


def _wait_settled(client: httpx.Client, timeout: float = 20.0) -> dict[str, Any]:
    """Poll obskit's books until nothing is buffered any more (deadline-bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = _stats(client)
        if all(s["buffered"] == 0 for s in stats.values()):
            return stats
        if time.monotonic() > deadline:
            raise TimeoutError(f"telemetry still buffered after {timeout}s: {stats}")
        time.sleep(0.1)  # polling interval of a deadline-bounded wait


def _assert_books(stats: dict[str, Any], rx: OtlpReceiver) -> None:
    for name, books in stats.items():
        assert books["balanced"], (name, books)
        assert books["produced"] == books["exported"] + sum(books["dropped"].values()) + books["buffered"]
        assert sum(books["dropped"].values()) == 0, (name, books)
    spans = rx.spans()
    assert stats["spans"]["exported"] == len(spans)
    assert len({s.span_id for s in spans}) == len(spans), "no span arrives twice"
    assert stats["logs"]["exported"] == len(rx.logs())


@pytest.fixture(params=["grpc", "http/protobuf"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def rx() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


# ---------------------------------------------------------------------------------------------------------------


def test_outage_from_start_and_restart_lose_nothing(rx: OtlpReceiver, protocol: str):
    """Collector down from the start, then up, then restarted: requests are unaffected and every span arrives."""
    n = 100
    rx.stop()  # down from the very start (its ports stay reserved for the restart)
    port = free_port()
    with serve(uvicorn(APP, port), port, _env(rx, protocol)) as srv, srv.client() as client:
        down = _load(client, n)
        books_down = _stats(client)["spans"]
        assert books_down["exported"] == 0
        outage_started = time.monotonic()
        rx.start()
        rx.wait_for_spans(n, name=PREDICT, timeout=15)
        recovered_after = time.monotonic() - outage_started

        healthy = _load(client, n)
        rx.wait_for_spans(2 * n, name=PREDICT, timeout=15)

        rx.stop()
        restarting = _load(client, n)
        rx.start()
        restart_started = time.monotonic()
        rx.wait_for_spans(3 * n, name=PREDICT, timeout=15)
        restart_recovered_after = time.monotonic() - restart_started
        stats = _wait_settled(client)
        _assert_books(stats, rx)
        assert stats["spans"]["exported"] == 3 * n * 2  # a server span and an inference span per request
        shutdown_s = _terminate(srv)
    _assert_unaffected(down, healthy, "collector down from the start")
    _assert_unaffected(restarting, healthy, "collector restarting")
    assert len(rx.spans(PREDICT)) == 3 * n
    _report(
        "outage-from-start-and-restart",
        protocol=protocol,
        requests=3 * n,
        spans_produced=stats["spans"]["produced"],
        spans_exported=stats["spans"]["exported"],
        spans_dropped=sum(stats["spans"]["dropped"].values()),
        latency_healthy=_ms(healthy),
        latency_down=_ms(down),
        latency_restarting=_ms(restarting),
        delivered_after_start_s=round(recovered_after, 2),
        delivered_after_restart_s=round(restart_recovered_after, 2),
        shutdown_s=round(shutdown_s, 2),
    )


FAULTS: dict[str, Callable[[OtlpReceiver], None]] = {
    "black hole": lambda rx: rx.black_hole(True),
    "slow (1 s per export)": lambda rx: rx.set_delay(1.0),
    "UNAVAILABLE / 503": lambda rx: rx.set_failure(503),
    "RESOURCE_EXHAUSTED / 429, retry after 1 s": lambda rx: rx.set_failure(429, retry_after_s=1.0),
}


def _clear(rx: OtlpReceiver) -> None:
    rx.black_hole(False)
    rx.set_delay(0)
    rx.set_failure(None)


def test_a_misbehaving_collector_never_slows_requests(rx: OtlpReceiver, protocol: str):
    """Black hole, slow, UNAVAILABLE/503, RESOURCE_EXHAUSTED/429: latency stays at baseline; nothing is lost."""
    n = 80
    port = free_port()
    figures: dict[str, Any] = {}
    with serve(uvicorn(APP, port), port, _env(rx, protocol)) as srv, srv.client() as client:
        _load(client, 20)  # warm-up: imports, first connections
        baseline = _load(client, n)
        figures["healthy"] = _ms(baseline)
        total = 20 + n
        for name, inject in FAULTS.items():
            inject(rx)
            latencies = _load(client, n)
            total += n
            _clear(rx)
            _assert_unaffected(latencies, baseline, name)
            figures[name] = _ms(latencies)
            rx.wait_for_spans(total, name=PREDICT, timeout=20)
        stats = _wait_settled(client)
        _assert_books(stats, rx)
        failed_requests = rx.failure_count()
        _terminate(srv)
    assert len(rx.spans(PREDICT)) == total
    _report(
        "misbehaving-collector",
        protocol=protocol,
        requests=total,
        spans_exported=stats["spans"]["exported"],
        spans_dropped=sum(stats["spans"]["dropped"].values()),
        export_attempts_refused=failed_requests,
        latency=figures,
    )


# ---------------------------------------------------------------------------------------------------------------
# SIGTERM and exit


SERVERS = {
    "uvicorn": lambda port: uvicorn(APP, port),
    "gunicorn sync (flask)": lambda port: gunicorn("examples.flask_app:app", port, "-w", "2", "--preload"),
    "gunicorn uvicorn-worker": lambda port: gunicorn(
        APP, port, "-w", "2", "--preload", "-k", "uvicorn.workers.UvicornWorker"
    ),
    "uvicorn --workers 2": lambda port: uvicorn(APP, port, "--workers", "2"),
}


@pytest.mark.parametrize("kind", list(SERVERS))
def test_sigterm_flushes_every_completed_request(rx: OtlpReceiver, kind: str):
    """N requests, then SIGTERM at once: the receiver has exactly N server spans when the server has exited."""
    n = 30
    port = free_port()
    with serve(SERVERS[kind](port), port, _env(rx, "grpc", OTEL_BSP_SCHEDULE_DELAY="5000")) as srv:
        for _ in range(n):  # separate connections, spread over the workers
            assert httpx.post(srv.url + "/predict", json=BODY, timeout=10).status_code == 200
        assert len(rx.spans(PREDICT)) < n, "the export schedule (5 s) has not run: the flush is shutdown's"
        shutdown_s = _terminate(srv)
    spans = rx.spans(PREDICT)
    assert len(spans) == n
    assert len({s.span_id for s in spans}) == n
    _report("sigterm-flush", server=kind, requests=n, server_spans_received=len(spans), shutdown_s=round(shutdown_s, 2))


STATES: dict[str, Callable[[OtlpReceiver], None]] = {
    "down": lambda rx: rx.stop(),
    "black hole": lambda rx: rx.black_hole(True),
    "slow (10 s per export)": lambda rx: rx.set_delay(10.0),
    "UNAVAILABLE": lambda rx: rx.set_failure(503),
}
SHUTDOWN_TIMEOUT = 2.0
# uvicorn's/gunicorn's own graceful stop and interpreter teardown come on top of obskit's deadline.
SERVER_SLACK = 2.5


@pytest.mark.parametrize(
    ("kind", "state"),
    [("uvicorn", state) for state in STATES]
    + [("gunicorn sync (flask)", "black hole"), ("gunicorn uvicorn-worker", "black hole")],
)
def test_sigterm_shutdown_is_bounded_in_every_collector_state(rx: OtlpReceiver, kind: str, state: str):
    """Whatever the collector does, a SIGTERMed server exits within OBSKIT_SHUTDOWN_TIMEOUT (plus its own stop)."""
    port = free_port()
    env = _env(
        rx,
        "grpc",
        OBSKIT_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT),
        OTEL_EXPORTER_OTLP_TIMEOUT="10000",  # longer than the deadline: the deadline must cut the attempt short
    )
    with serve(SERVERS[kind](port), port, env) as srv:
        STATES[state](rx)
        for _ in range(10):
            assert httpx.post(srv.url + "/predict", json=BODY, timeout=10).status_code == 200
        elapsed = _terminate(srv, timeout=SHUTDOWN_TIMEOUT + 10)
        log = srv.log()
    _clear(rx)
    assert elapsed < SHUTDOWN_TIMEOUT + SERVER_SLACK, (state, elapsed, log[-2000:])
    assert "Traceback" not in log, log[-2000:]
    _report(
        "sigterm-deadline", server=kind, collector=state, shutdown_timeout_s=SHUTDOWN_TIMEOUT, exit_s=round(elapsed, 2)
    )


EXIT_SCRIPT = """
import obskit
from opentelemetry import trace

obskit.init(service_name="exiting", system_metrics=False)
tracer = trace.get_tracer("script")
for i in range({n}):
    tracer.start_span("work", attributes={{"i": i}}).end()
"""


@pytest.mark.parametrize("state", ["up", "down", "black hole"])
def test_interpreter_exit_is_bounded(rx: OtlpReceiver, state: str, tmp_path: Path):
    """A plain script that ends: at exit obskit flushes (collector up) or gives up at the deadline (no minute of retries)."""
    n = 200
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(EXIT_SCRIPT.format(n=n)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBSKIT_"))}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=rx.grpc_endpoint,
        OBSKIT_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT),
        OTEL_EXPORTER_OTLP_TIMEOUT="10000",
    )
    if state == "down":
        rx.stop()
    elif state == "black hole":
        rx.black_hole(True)
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    _clear(rx)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    if state == "up":
        assert len(rx.spans("work")) == n
    assert elapsed < SHUTDOWN_TIMEOUT + 2.0, (state, elapsed)
    _report("interpreter-exit", collector=state, spans=n, exit_s=round(elapsed, 2))


def test_nothing_is_shut_down_twice(rx: OtlpReceiver, tmp_path: Path):
    """An explicit obskit.shutdown() and then interpreter exit: no second shutdown, no SDK warning about one."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(EXIT_SCRIPT.format(n=5)) + "\nobskit.shutdown()\nobskit.shutdown()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBSKIT_"))}
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT=rx.grpc_endpoint)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert len(rx.spans("work")) == 5


# ---------------------------------------------------------------------------------------------------------------
# Pre-fork


FORK_SCRIPT = """
import os, sys, threading
import obskit
from opentelemetry import trace

obskit.init(service_name="forking", system_metrics=False, metrics_exporter="none", logs_exporter="none")
tracer = trace.get_tracer("script")
tracer.start_span("before-fork").end()
flusher = threading.Thread(target=obskit.force_flush)
flusher.start()
sys.stdin.readline()  # the test says go once the receiver holds this process's export call
pid = os.fork()
if pid == 0:
    tracer.start_span("in-child").end()
    sys.exit(0)  # a normal exit: obskit's flush at exit sends the child's span
flusher.join()
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status), flush=True)
"""


def test_fork_during_a_grpc_export_leaves_a_working_child(rx: OtlpReceiver, tmp_path: Path):
    """A fork while the export thread is inside a gRPC call (a gunicorn master forking a worker as it exports).

    gRPC's C core skips its fork handlers while another thread is in a call; a child forked then aborts (SIGABRT)
    the first time it polls. obskit's fork hook waits for the call in flight (bounded by the export timeout).
    """
    script = tmp_path / "forker.py"
    script.write_text(FORK_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBSKIT_"))}
    # gRPC reports skipping its fork handlers at INFO: pinned, so that the assertion below cannot pass by silence.
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT=rx.grpc_endpoint, OTEL_EXPORTER_OTLP_TIMEOUT="10000", GRPC_VERBOSITY="INFO")
    rx.set_delay(1.0)  # the parent's export call stays in flight for a second
    process = subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        rx.wait_for_requests(1, signal="traces", timeout=20)
        out, err = process.communicate("go\n", timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert out.strip() == "child 0", (out, err)
    assert "skipping fork() handlers" not in err, err
    assert len(rx.spans("before-fork")) == 1
    assert len(rx.spans("in-child")) == 1


@pytest.mark.parametrize(
    ("app", "worker_class"),
    [("examples.flask_app:app", "sync"), (APP, "uvicorn.workers.UvicornWorker")],
)
def test_workers_recycled_by_max_requests_lose_nothing(rx: OtlpReceiver, app: str, worker_class: str):
    """gunicorn --preload -w 2 --max-requests 10: every request of every recycled worker arrives, once."""
    n = 50
    port = free_port()
    argv = gunicorn(app, port, "--preload", "-w", "2", "-k", worker_class, "--max-requests", "10")
    resets = 0
    with serve(argv, port, _env(rx, "grpc", OTEL_BSP_SCHEDULE_DELAY="5000")) as srv:
        for _ in range(n):
            for _attempt in range(5):
                try:
                    response = httpx.post(srv.url + "/predict", json=BODY, timeout=10)
                    break
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    # A worker past its max-requests closes connections it accepted but has not read a request
                    # from (uvicorn's h11 shutdown(); gunicorn issues 2567 and 3038): the app never saw that
                    # request, so the client sends it again. Were it seen, its span would make len(spans) > n.
                    resets += 1
            else:
                pytest.fail("five connection resets in a row")
            assert response.status_code == 200
        # Recycled workers flushed on their way out; the live ones are flushed by the SIGTERM below.
        _terminate(srv)
    spans = rx.spans(PREDICT)
    workers = {s.resource["service.instance.id"] for s in spans}
    assert len(spans) == n
    assert len({s.span_id for s in spans}) == n
    assert len(workers) >= n // 10, "workers were recycled (each has its own instance id)"
    _report(
        "max-requests-recycling",
        worker_class=worker_class,
        requests=n,
        spans_received=len(spans),
        workers=len(workers),
        connection_resets=resets,
    )


# ---------------------------------------------------------------------------------------------------------------
# The documented 30-second restart at 100 requests/s (about a minute per protocol).


def test_thirty_second_restart_at_100_rps_loses_nothing(rx: OtlpReceiver, protocol: str):
    """100 requests/s for 45 s with the collector down for 30 s of it: every span arrives, latency unchanged."""
    import threading

    rate, before_s, outage_s, after_s = 100, 5.0, 30.0, 10.0
    port = free_port()
    env = _env(rx, protocol, OTEL_BSP_SCHEDULE_DELAY="1000", OTEL_METRIC_EXPORT_INTERVAL="5000")
    with serve(uvicorn(APP, port), port, env) as srv, srv.client() as client:
        warm_up = len(_load(client, 50))

        def paced(seconds: float, into: list[float]) -> None:
            start = time.monotonic()
            for i in range(int(seconds * rate)):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the load, not synchronising on telemetry
                into.extend(_load(client, 1))

        before: list[float] = []
        during: list[float] = []
        after: list[float] = []
        paced(before_s, before)
        rx.stop()
        paced(outage_s, during)
        peak = _stats(client)
        backlog = warm_up + len(before) + len(during)
        rx.start()
        returned = time.monotonic()
        load = threading.Thread(target=paced, args=(after_s, after))
        load.start()  # the load goes on while the backlog drains
        rx.wait_for_spans(backlog, name=PREDICT, timeout=60)
        drained_s = time.monotonic() - returned
        load.join()
        total = backlog + len(after)
        rx.wait_for_spans(total, name=PREDICT, timeout=60)
        stats = _wait_settled(client, timeout=60)
        _assert_books(stats, rx)
        shutdown_s = _terminate(srv)
    assert len(rx.spans(PREDICT)) == total
    _assert_unaffected(during, before, "30 s outage")
    _assert_unaffected(after, before, "backlog draining")
    _report(
        "thirty-second-restart",
        protocol=protocol,
        rate_rps=rate,
        outage_s=outage_s,
        requests=total,
        spans_produced=stats["spans"]["produced"],
        spans_exported=stats["spans"]["exported"],
        spans_dropped=sum(stats["spans"]["dropped"].values()),
        logs_exported=stats["logs"]["exported"],
        metric_points_exported=stats["metric_points"]["exported"],
        dropped_any_signal=sum(sum(s["dropped"].values()) for s in stats.values()),
        buffered_at_peak={name: s["buffered"] for name, s in peak.items()},
        buffered_bytes_at_peak=sum(s["buffered_bytes"] for s in peak.values()),
        latency_before=_ms(before),
        latency_during=_ms(during),
        latency_while_draining=_ms(after),
        backlog_delivered_after_return_s=round(drained_s, 2),
        shutdown_s=round(shutdown_s, 2),
    )
