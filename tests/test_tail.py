"""``obskit tail``: RED maths and trace assembly in-process, then the command against the real example app."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from e2e._servers import ROOT, free_port, serve, telemetry_env, uvicorn
from obskit._receiver import ReceivedLog, ReceivedMetricPoint, ReceivedSpan
from obskit._tail import (
    RedRow,
    RedTable,
    TraceAssembler,
    histogram_quantile,
    json_record,
    log_line,
    red_table,
    trace_tree,
)

APP = "examples.fastapi_app:app"
S = 1_000_000_000  # one second in nanoseconds
T0 = 1_800_000_000 * S  # a fixed "now" for the in-process tests
BODY = {"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}


# --------------------------------------------------------------------------------------------------------------
# RED statistics.


def test_histogram_quantile_interpolates_like_prometheus():
    """Linear interpolation inside the bucket, 0 as the first lower edge, the top bound for the +Inf bucket."""
    bounds = (0.1, 0.2, 0.4)
    assert histogram_quantile(0.5, bounds, (0, 10, 0, 0)) == pytest.approx(0.15)
    assert histogram_quantile(0.5, bounds, (10, 0, 0, 0)) == pytest.approx(0.05)
    assert histogram_quantile(0.99, bounds, (50, 49, 0, 1)) == pytest.approx(0.2)
    assert histogram_quantile(0.999, bounds, (50, 49, 0, 1)) == 0.4  # in +Inf: the highest bound
    assert histogram_quantile(0.95, bounds, (0, 0, 0, 0)) is None
    assert histogram_quantile(0.5, bounds, (1, 2)) is None  # malformed: not len(bounds) + 1 buckets


def http_point(
    count: int,
    buckets: tuple[int, ...],
    *,
    time_ns: int,
    start_ns: int = T0,
    status: int = 200,
    route: str = "/predict",
    temporality: str = "CUMULATIVE",
    instance: str = "a",
) -> ReceivedMetricPoint:
    attributes: dict[str, Any] = {
        "http.request.method": "POST",
        "http.route": route,
        "http.response.status_code": status,
        "url.scheme": "http",
    }
    if status >= 500:
        attributes["error.type"] = str(status)
    return ReceivedMetricPoint(
        name="http.server.request.duration",
        description="",
        unit="s",
        kind="histogram",
        is_monotonic=False,
        temporality=temporality,
        attributes=attributes,
        value=None,
        count=count,
        sum=0.0,
        bucket_counts=buckets,
        explicit_bounds=(0.1, 0.2, 0.4),
        exemplars=[],
        time_unix_nano=time_ns,
        start_time_unix_nano=start_ns,
        resource={"service.name": "svc", "service.instance.id": instance},
        scope="test",
        protocol="grpc",
    )


def test_red_table_turns_cumulative_points_into_deltas():
    """Cumulative points of one series count once; the error series gives the ratio; quantiles use the deltas."""
    red = RedTable(window_s=60, started_ns=T0)
    red.add(http_point(4, (4, 0, 0, 0), time_ns=T0 + 2 * S))
    red.add(http_point(10, (4, 6, 0, 0), time_ns=T0 + 4 * S))  # +6, all in (0.1, 0.2]
    red.add(http_point(10, (4, 6, 0, 0), time_ns=T0 + 6 * S))  # nothing new
    red.add(http_point(2, (0, 0, 2, 0), time_ns=T0 + 6 * S, start_ns=T0 + 3 * S, status=500))
    [row] = red.rows()
    assert (row.kind, row.label, row.requests) == ("http", "POST /predict", 12)
    assert row.rate == pytest.approx(12 / 6)  # from the series' start to the newest point
    assert row.error_ratio == pytest.approx(2 / 12)
    p50, p95, p99 = row.quantiles
    assert p50 == pytest.approx(0.1 + 0.1 * (6 - 4) / 6)
    assert p95 is not None
    assert 0.2 < p95 <= 0.4
    assert p99 is not None
    assert 0.2 < p99 <= 0.4


def test_red_table_baseline_restart_and_delta_temporality():
    """A series older than tail is a baseline; a restarted series counts in full; delta points count as is."""
    red = RedTable(window_s=60, started_ns=T0)
    old = T0 - 3600 * S
    red.add(http_point(1000, (1000, 0, 0, 0), time_ns=T0 + 1 * S, start_ns=old))  # before tail: baseline
    assert red.rows() == [RedRow("http", "POST /predict", 0, 0.0, None, (None, None, None))]
    red.add(http_point(1003, (1003, 0, 0, 0), time_ns=T0 + 2 * S, start_ns=old))  # +3
    red.add(http_point(2, (2, 0, 0, 0), time_ns=T0 + 3 * S, start_ns=T0 + 2 * S))  # process restarted: +2
    red.add(http_point(5, (5, 0, 0, 0), time_ns=T0 + 3 * S, temporality="DELTA", instance="b", start_ns=T0 + 2 * S))
    [row] = red.rows()
    assert row.requests == 3 + 2 + 5
    assert row.error_ratio == 0.0


def test_red_table_window_and_model_stages():
    """Deltas older than the window drop out; model stages get their own rows after the routes."""
    red = RedTable(window_s=10, started_ns=T0)
    red.add(http_point(5, (5, 0, 0, 0), time_ns=T0 + 1 * S))
    red.add(http_point(6, (6, 0, 0, 0), time_ns=T0 + 30 * S))  # the first delta is now 29 s old
    stage = replace(
        http_point(3, (0, 3, 0, 0), time_ns=T0 + 30 * S),
        name="obskit.model.duration",
        attributes={"model.name": "iris", "model.version": "1", "model.stage": "inference"},
    )
    red.add(stage)
    red.add(replace(stage, attributes={**stage.attributes, "error.type": "RuntimeError"}, count=1))
    rows = red.rows()
    assert [(r.kind, r.label, r.requests) for r in rows] == [
        ("http", "POST /predict", 1),
        ("model", "inference iris", 4),
    ]
    assert rows[1].error_ratio == pytest.approx(0.25)
    # The route stays idle: its repeated cumulative totals move the window on until its last delta leaves it.
    red.add(http_point(6, (6, 0, 0, 0), time_ns=T0 + 35 * S))
    assert red.rows()[0].rate == pytest.approx(1 / 10)  # one request in the 10 s window
    red.add(http_point(6, (6, 0, 0, 0), time_ns=T0 + 41 * S))
    assert (red.rows()[0].requests, red.rows()[0].rate, red.rows()[0].quantiles) == (0, 0.0, (None, None, None))
    text = render(red_table(rows, 10))
    assert re.search(r"^\s*POST /predict\s+1\s+\S+\s+0\.0%\s+50ms\s+95ms\s+99ms\s*$", text, re.M), text
    assert re.search(r"^\s*inference iris\s+4\s+\S+\s+25\.0%\s+\S+ms\s+\S+ms\s+\S+ms\s*$", text, re.M), text


# --------------------------------------------------------------------------------------------------------------
# Trace assembly and rendering.


def span(name: str, span_id: str, parent: str = "", *, start: int = 0, ms: float = 1.0, **attrs: Any) -> ReceivedSpan:
    return ReceivedSpan(
        name=name,
        trace_id="ab" * 16,
        span_id=span_id,
        parent_span_id=parent,
        kind="INTERNAL" if parent else "SERVER",
        status_code=attrs.pop("status", "UNSET"),
        status_message=attrs.pop("message", ""),
        start_time_ns=T0 + start,
        end_time_ns=T0 + start + int(ms * 1e6),
        attributes=attrs,
        events=[],
        resource={"service.name": "svc"},
        scope="test",
        protocol="grpc",
    )


def render(renderable: Any) -> str:
    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=300, highlight=False).print(renderable)
    return out.getvalue()


def test_trace_assembler_waits_for_root_then_settles():
    """Children alone wait; the root makes the trace ready after the settle time; late spans come out flagged."""
    assembler = TraceAssembler(grace_s=2.0, settle_s=0.3)
    assembler.add(span("inference m", "02", "01"), now=10.0)
    assert assembler.ready(11.0) == []  # no root, grace not over
    assembler.add(span("POST /predict", "01"), now=11.0)
    assert assembler.ready(11.1) == []  # root just arrived: children of another batch may follow
    [(spans, late)] = assembler.ready(11.4)
    assert ([s.name for s in spans], late) == (["inference m", "POST /predict"], False)
    assembler.add(span("postprocess m", "03", "01"), now=12.0)
    [(spans, late)] = assembler.ready(14.1)  # no root in this batch: printed after the grace period
    assert ([s.name for s in spans], late) == (["postprocess m"], True)
    assert assembler.ready(20.0) == []


def test_trace_tree_text():
    """The tree nests children under parents by start time, with duration, status and key attributes."""
    spans = [
        span("inference iris", "03", "01", start=2_000_000, ms=3.2, **{"model.name": "iris", "model.stage": "inference",
             "model.batch_size": 2, "error.type": "RuntimeError"}, status="ERROR", message="RuntimeError: boom"),
        span("POST /predict", "01", ms=12.5, **{"http.route": "/predict", "http.response.status_code": 500}),
        span("preprocess iris", "02", "01", start=1_000_000, ms=0.42, **{"model.name": "iris",
             "model.stage": "preprocess", "model.batch_size": 2}),
    ]  # fmt: skip
    assert render(trace_tree(spans)).splitlines() == [
        "trace abababababababababababababababab  service=svc",
        "└── POST /predict  12.5 ms  ok  http.route=/predict  http.response.status_code=500",
        "    ├── preprocess iris  0.42 ms  ok  model.name=iris  model.stage=preprocess  model.batch_size=2",
        "    └── inference iris  3.2 ms  ERROR RuntimeError: boom  model.name=iris  model.stage=inference  "
        "model.batch_size=2  error.type=RuntimeError",
    ]
    orphan = render(trace_tree([span("inference iris", "03", "99")], late=True)).splitlines()[0]
    assert orphan == (
        "trace abababababababababababababababab  service=svc  (late spans of a trace printed earlier)  "
        "(root not received)"
    )


def test_log_line_and_json_record():
    """Log lines carry the trace and span ids; --json lines hold every field plus the item type."""
    record = ReceivedLog(
        body="predicted 2 rows",
        severity_text="INFO",
        severity_number=9,
        trace_id="ab" * 16,
        span_id="cd" * 8,
        attributes={"code.function": "predict"},
        resource={"service.name": "svc"},
        scope="iris",
        time_unix_nano=T0,
        protocol="grpc",
    )
    line = render(log_line(record)).rstrip("\n")
    assert re.fullmatch(
        r"log \d\d:\d\d:\d\d\.\d{3} INFO    iris: predicted 2 rows  trace_id=(ab){16} span_id=(cd){8}", line
    ), line
    assert json.loads(json_record("logs", record)) == {
        "type": "log",
        "body": "predicted 2 rows",
        "severity_text": "INFO",
        "severity_number": 9,
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "attributes": {"code.function": "predict"},
        "resource": {"service.name": "svc"},
        "scope": "iris",
        "time_unix_nano": T0,
        "protocol": "grpc",
    }
    as_json = json.loads(json_record("traces", span("POST /predict", "01", ms=2.0)))
    assert (as_json["type"], as_json["name"], as_json["duration_s"]) == ("span", "POST /predict", 0.002)


# --------------------------------------------------------------------------------------------------------------
# The command, against uvicorn serving examples/fastapi_app.py.


class TailProcess:
    """``python -m obskit tail`` on free ports, its output collected line by line as it is printed."""

    def __init__(self, *extra: str) -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBSKIT_"))}
        argv = [sys.executable, "-m", "obskit", "tail", "--grpc-port", str(self.grpc_port)]
        argv += ["--http-port", str(self.http_port), "--grace", "1", "--table-interval", "0.3", *extra]
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
        )
        self._lines: list[str] = []
        self._err: list[str] = []
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self._lines), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.wait_for(lambda _out: any("receiving OTLP" in line for line in self._err), 30, what="the banner")

    def _read(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            with self._cond:
                into.append(line)
                self._cond.notify_all()

    @property
    def stdout(self) -> str:
        with self._cond:
            return "".join(self._lines)

    def wait_for(self, found: Callable[[str], bool], timeout: float, *, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not found("".join(self._lines)):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.process.poll() is not None:
                    raise AssertionError(f"tail never printed {what}; stdout:\n{''.join(self._lines)}{self._err}")
                self._cond.wait(min(remaining, 0.5))

    def stop(self) -> tuple[int, str, str]:
        """Ctrl-C (SIGINT to our own child), as a user would; returns exit code, stdout and stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(5)
        for reader in self._readers:
            reader.join(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return code, self.stdout, "".join(self._err)


@pytest.fixture
def tail_text() -> Iterator[TailProcess]:
    tail = TailProcess()
    try:
        yield tail
    finally:
        tail.stop()


def _durations_masked(text: str) -> str:
    return re.sub(r"\b\d+(\.\d+)? (ms|s)\b", "<d>", text)


@pytest.mark.e2e
def test_tail_prints_trees_table_and_logs_from_the_example_app(tail_text: TailProcess):
    """Real app over gRPC: a tree per request, a RED row per route and stage, log lines with printed trace ids."""
    port = free_port()
    env = telemetry_env(f"http://127.0.0.1:{tail_text.grpc_port}", IRIS_FAIL_EVERY="3")
    red_row = r"^\s*POST /predict\s+3\s+[\d.]+\s+33\.3%\s+\S+ms\s+\S+ms\s+\S+ms\s*$"
    stage_row = r"^\s*generate iris-centroid\s+1\s"
    with serve(uvicorn(APP, port), port, env) as server, server.client() as client:
        assert client.get("/stream", params={"n": 3}).status_code == 200
        # The 500 last: uvicorn closes the connection after an unhandled exception, and httpx would reuse it.
        statuses = [client.post("/predict", json=BODY).status_code for _ in range(3)]
        # The app's periodic exports, not its exit, deliver the data: wait while it runs.
        tail_text.wait_for(
            lambda out: re.search(red_row, out, re.M) is not None and re.search(stage_row, out, re.M) is not None,
            20,
            what="the POST /predict and generate rows",
        )
    assert statuses == [200, 200, 500]
    code, out, err = tail_text.stop()
    assert code == 0, err
    lines = _durations_masked(out).splitlines()

    # The failed request's trace, whole.
    at = lines.index(
        "└── POST /predict  <d>  ERROR  http.route=/predict  http.response.status_code=500  error.type=500  "
        "exception RuntimeError: model backend unavailable"
    )
    assert re.fullmatch(r"trace [0-9a-f]{32}  service=iris-classifier", lines[at - 1])
    assert lines[at + 1 : at + 3] == [
        "    ├── preprocess iris-centroid  <d>  ok  model.name=iris-centroid  model.stage=preprocess  "
        "model.batch_size=2",
        "    └── inference iris-centroid  <d>  ERROR RuntimeError: model backend unavailable  "
        "model.name=iris-centroid  model.stage=inference  model.batch_size=2  error.type=RuntimeError",
    ]
    # A successful one: server span with the three stages under it.
    ok = "└── POST /predict  <d>  ok  http.route=/predict  http.response.status_code=200"
    assert lines.count(ok) == 2
    at = lines.index(ok)
    assert [line.split("  <d>")[0] for line in lines[at + 1 : at + 4]] == [
        "    ├── preprocess iris-centroid",
        "    ├── inference iris-centroid",
        "    └── postprocess iris-centroid",
    ]
    assert "└── GET /stream  <d>  ok  http.route=/stream  http.response.status_code=200" in lines
    assert "    └── generate iris-centroid  <d>  ok  model.name=iris-centroid  model.stage=generate" in lines

    # The final RED table: routes, then stages.
    assert re.search(red_row, out, re.M)
    assert re.search(r"^\s*GET /stream\s+1\s+[\d.]+\s+0\.0%", out, re.M)
    assert re.search(r"^\s*inference iris-centroid\s+3\s+[\d.]+\s+33\.3%", out, re.M)
    assert re.search(r"^\s*generate iris-centroid\s+1\s+[\d.]+\s+0\.0%", out, re.M)

    # Log records, with the ids of traces printed above.
    logs = re.findall(
        r"^log \S+ INFO\s+iris: predicted 2 rows  trace_id=([0-9a-f]{32}) span_id=[0-9a-f]{16}$", out, re.M
    )
    assert len(logs) == 2
    printed = set(re.findall(r"^trace ([0-9a-f]{32})", out, re.M))
    assert set(logs) <= printed
    assert "received" in err
    assert "0 spans" not in err


@pytest.mark.e2e
def test_tail_json_output_from_the_example_app():
    """--json over HTTP/protobuf: every stdout line is one JSON object: spans, metric points and log records."""
    tail = TailProcess("--json")
    port = free_port()
    env = telemetry_env(f"http://127.0.0.1:{tail.http_port}", "http/protobuf")
    try:

        def has_everything(out: str) -> bool:
            return (
                '"name": "POST /predict"' in out
                and '"name": "http.server.request.duration"' in out
                and '"type": "log"' in out
            )

        with serve(uvicorn(APP, port), port, env) as server, server.client() as client:
            assert client.post("/predict", json=BODY).status_code == 200
            tail.wait_for(has_everything, 20, what="a span, a duration point and a log")
    finally:
        code, out, err = tail.stop()
    assert code == 0, err
    items = [json.loads(line) for line in out.splitlines()]  # every line parses
    assert {item["type"] for item in items} == {"span", "metric", "log"}
    [root] = [i for i in items if i["type"] == "span" and i["name"] == "POST /predict"]
    assert root["kind"] == "SERVER"
    assert root["protocol"] == "http"
    assert root["attributes"]["http.route"] == "/predict"
    assert root["resource"]["service.name"] == "iris-classifier"
    assert root["duration_s"] == pytest.approx((root["end_time_ns"] - root["start_time_ns"]) / 1e9)
    children = {i["name"] for i in items if i["type"] == "span" and i["parent_span_id"] == root["span_id"]}
    assert children == {"preprocess iris-centroid", "inference iris-centroid", "postprocess iris-centroid"}
    durations = [i for i in items if i["type"] == "metric" and i["name"] == "http.server.request.duration"]
    assert durations[-1]["attributes"]["http.route"] == "/predict"
    assert durations[-1]["kind"] == "histogram"
    assert durations[-1]["unit"] == "s"
    assert len(durations[-1]["bucket_counts"]) == len(durations[-1]["explicit_bounds"]) + 1
    [log] = [i for i in items if i["type"] == "log" and i["body"] == "predicted 2 rows"]
    assert log["trace_id"] == root["trace_id"]


def test_tail_port_in_use_is_a_usage_error():
    """A taken port: exit 2 with a message naming the ports, not a traceback."""
    with Listening() as port:
        done = subprocess.run(
            [sys.executable, "-m", "obskit", "tail", "--grpc-port", "0", "--http-port", str(port), "--duration", "1"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 2
    assert done.stderr.startswith(f"obskit: error: cannot listen on 127.0.0.1 (gRPC port 0, HTTP port {port}): ")
    assert "Traceback" not in done.stderr


class Listening:
    """Holds a listening socket on a free 127.0.0.1 port."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


@pytest.mark.e2e
def test_make_demo_script_shows_trees_and_red_table():
    """examples/demo.py --duration 8 (what `make demo` runs) exits 0 with trace trees and a POST /predict row."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBSKIT_"))}
    done = subprocess.run(
        [sys.executable, str(Path(ROOT) / "examples" / "demo.py"), "--duration", "8"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        cwd=ROOT,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    out = _durations_masked(done.stdout)
    assert re.search(r"^trace [0-9a-f]{32}  service=iris-classifier$", out, re.M)
    assert "└── POST /predict  <d>  ok  http.route=/predict  http.response.status_code=200" in out
    assert "    ├── inference iris-centroid  <d>  ok" in out
    assert re.search(r"^\s*POST /predict\s+\d+\s+[\d.]+\s+\d+\.\d%\s+\S+ms\s+\S+ms\s+\S+ms\s*$", out, re.M)
    assert re.search(r"^\s*inference iris-centroid\s+\d+", out, re.M)
    assert re.search(r"^log \S+ INFO\s+iris: predicted \d+ rows  trace_id=[0-9a-f]{32}", out, re.M)
    assert "demo: sent" in done.stderr
    assert "POST /predict 500" in done.stderr
