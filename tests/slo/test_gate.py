from __future__ import annotations

import base64
import io
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from rich.console import Console

from obskit.exceptions import ConfigError
from obskit.slo import load_slo_file
from obskit.slo._gate import PrometheusClient, evaluate, exit_code, judge, run_gate
from obskit.slo._model import parse_selector, parse_slo
from obskit.slo._rules import good_ratio_query

from ._fake_prometheus import Answer, fake_prometheus, serving, vector

ROOT = Path(__file__).resolve().parents[2]
SLO = parse_slo(
    """
service: svc
objectives:
  - {name: avail, type: availability, target: 99.9, routes: ["/predict"]}
  - {name: fast, type: latency, threshold: 0.25, target: 99, model: m, stage: inference}
"""
)
AVAIL, FAST = SLO.objectives


def answers(avail: Answer, fast: Answer, jobs: Answer | None = None):  # type: ignore[no-untyped-def]
    def answer(query: str) -> Answer:
        if query.startswith("group by (job)"):
            return jobs or vector()
        return fast if "obskit_model_duration_seconds_bucket" in query else avail

    return answer


def gate(url: str, **kwargs: object) -> tuple[int, str]:
    out = io.StringIO()
    code = run_gate(SLO, url, console=Console(file=out, width=200, highlight=False), **kwargs)  # type: ignore[arg-type]
    return code, out.getvalue()


@pytest.mark.parametrize(
    ("value", "status"),
    [(1.0, "pass"), (0.999, "pass"), (0.99899, "fail"), (0.0, "fail"), (float("nan"), "inconclusive")],
)
def test_judge(value: float, status: str) -> None:
    """At or above the target passes, below fails, NaN (no requests in the window) is inconclusive."""
    verdict = judge(AVAIL, "q", [({}, value)], "5m")
    assert verdict.status == status
    assert verdict.measured == (None if status == "inconclusive" else value)


def test_judge_without_samples() -> None:
    """No series at all is inconclusive, with the window in the reason; more than one series too."""
    assert judge(AVAIL, "q", [], "5m").reason == "no data: no matching series in the last 5m"
    assert judge(AVAIL, "q", [({}, 1.0), ({"a": "b"}, 1.0)], "5m").status == "inconclusive"


def test_exit_codes() -> None:
    """Any failure gives 1, else any inconclusive gives 2, else 0."""
    p = judge(AVAIL, "q", [({}, 1.0)], "5m")
    f = judge(AVAIL, "q", [({}, 0.5)], "5m")
    i = judge(AVAIL, "q", [], "5m")
    assert exit_code([p, p]) == 0
    assert exit_code([p, f, i]) == 1
    assert exit_code([p, i]) == 2
    assert exit_code([]) == 2


def test_healthy_passes() -> None:
    """Every objective above target: exit 0, a table with measured values and PASS."""
    with fake_prometheus(answers(vector(0.9995), vector(1))) as (url, queries):
        code, out = gate(url, window="10m")
    assert code == 0
    assert queries == [good_ratio_query(AVAIL, SLO.selector, "10m"), good_ratio_query(FAST, SLO.selector, "10m")]
    assert 'SLO gate: svc {job="svc"}, last 10m' in out
    assert "avail" in out
    assert "99.950%" in out
    assert ">= 99.9%" in out
    assert "latency <= 0.25s, model m, stage inference" in out
    assert "100.00%" in out
    assert out.count("PASS") == 3  # two rows and the summary
    assert "gate: PASS (2 objectives)" in out


def test_failure_names_the_objective() -> None:
    """An objective below target: exit 1, and the output names it with measured value and target."""
    with fake_prometheus(answers(vector(0.95), vector(1))) as (url, _):
        code, out = gate(url)
    assert code == 1
    assert "FAIL avail: 95.000% good is below the 99.9% target" in out
    assert "gate: FAIL (avail)" in out


def test_fail_wins_over_no_data() -> None:
    """One objective failing and another without data is a failure, not inconclusive."""
    with fake_prometheus(answers(vector(0.5), vector())) as (url, _):
        code, out = gate(url)
    assert code == 1
    assert "INCONCLUSIVE fast: no data: no matching series in the last 5m" in out


def test_no_data_is_inconclusive_with_a_hint() -> None:
    """No series: exit 2, naming the selector used and the jobs that do have the metric."""
    jobs = 200, {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"job": "iris"}, "value": [0, "1"]}, {"metric": {"job": "other"}, "value": [0, "1"]}]}}  # fmt: skip
    with fake_prometheus(answers(vector(), vector(), jobs)) as (url, _):
        code, out = gate(url)
    assert code == 2
    assert (
        'no data: no matching series in the last 5m; selector {job="svc"}; '
        "http_server_request_duration_seconds_count exists for job 'iris', 'other'" in out
    )
    assert "gate: INCONCLUSIVE" in out


def test_no_requests_in_window_is_inconclusive() -> None:
    """Series exist but nothing happened in the window (0/0 = NaN): exit 2."""
    with fake_prometheus(answers(vector("NaN"), vector("NaN"))) as (url, _):
        code, out = gate(url)
    assert code == 2
    assert "no data: no requests in the last 5m" in out


def test_unreachable_prometheus_is_inconclusive() -> None:
    """Connection refused: exit 2, one line naming the URL for all objectives, no per-objective retry."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening: refused
        code, out = gate(url)
    assert code == 2
    assert f"INCONCLUSIVE avail, fast: {url} is unreachable" in out


def test_timeout_is_inconclusive() -> None:
    """A server that accepts but never answers times out within --timeout: exit 2."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        code, out = gate(url, timeout=0.3)
    assert code == 2
    assert "is unreachable: timed out" in out or "is unreachable" in out


def test_rejected_query_and_non_api_answers() -> None:
    """HTTP 400 (e.g. a bad --selector) and non-JSON answers are inconclusive with Prometheus' message."""
    bad = 400, {"status": "error", "errorType": "bad_data", "error": "parse error at char 5"}
    with fake_prometheus(answers(bad, bad)) as (url, _):
        code, out = gate(url)
    assert code == 2
    assert "INCONCLUSIVE avail, fast: Prometheus rejected the query: parse error at char 5" in out
    with fake_prometheus(lambda q: (200, b"<html>not prometheus</html>")) as (url, _):
        code, out = gate(url)
    assert code == 2
    assert "did not answer with the Prometheus API" in out
    with fake_prometheus(lambda q: (503, {"error": "overloaded"})) as (url, _):
        code, out = gate(url)
    assert code == 2
    assert "answered HTTP 503: overloaded" in out


def test_selector_override_reaches_the_queries() -> None:
    """--selector job="canary" replaces the service's job matcher in every query."""
    with fake_prometheus(answers(vector(1), vector(1))) as (url, queries):
        client = PrometheusClient(url)
        verdicts = evaluate(SLO, client, window="1m", override=parse_selector('job="canary"'))
    assert [v.status for v in verdicts] == ["pass", "pass"]
    assert all('job="canary"' in q and 'job="svc"' not in q for q in queries)


def test_json_output() -> None:
    """--json prints machine-readable verdicts with the same exit code."""
    with fake_prometheus(answers(vector(0.95), vector(1))) as (url, _):
        code, out = gate(url, json_output=True)
    doc = json.loads(out)
    assert code == doc["exit_code"] == 1
    assert [(o["name"], o["verdict"], o["measured"]) for o in doc["objectives"]] == [
        ("avail", "fail", 0.95),
        ("fast", "pass", 1.0),
    ]


def test_bad_url_is_a_config_error() -> None:
    """A URL that is not http(s) is rejected before any query."""
    with pytest.raises(ConfigError, match="--prometheus 'localhost:9090': not an http\\(s\\) URL"):
        PrometheusClient("localhost:9090")


def test_path_prefix_is_kept() -> None:
    """A Prometheus behind a path prefix (/prometheus) is queried under it."""
    assert PrometheusClient("http://h:9090/prometheus/").url == "http://h:9090/prometheus"


def test_example_file_queries() -> None:
    """The gate evaluates every objective of examples/slo.yaml in file order."""
    slo = load_slo_file(ROOT / "examples" / "slo.yaml")
    with fake_prometheus(lambda q: vector(1)) as (url, queries):
        verdicts = evaluate(slo, PrometheusClient(url))
    assert [v.objective.name for v in verdicts] == [o.name for o in slo.objectives]
    assert queries == [good_ratio_query(o, slo.selector, "5m") for o in slo.objectives]


EXAMPLE = ROOT / "examples" / "slo.yaml"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:abc", "not a valid URL (Port could not be cast to integer value as 'abc')"),
        ("http://127.0.0.1:99999", "not a valid URL (Port out of range 0-65535)"),
        ("http://[::1", "not a valid URL (Invalid IPv6 URL)"),
        ("http://127.0.0.1 :9090", "contains whitespace or control characters"),
        ("http://:9090", "has no host name"),
        ("http://user:s3cret@[::1", "not a valid URL (Invalid IPv6 URL)"),
        ("http://a..b:9090", "the host name 'a..b' is not a valid DNS name"),
    ],
)
def test_malformed_url_is_a_usage_error(capsys: pytest.CaptureFixture[str], url: str, problem: str) -> None:
    """A malformed --prometheus URL exits 2 with what is wrong (credentials masked), never a traceback."""
    from obskit import cli

    assert cli.main(["gate", "--prometheus", url, str(EXAMPLE)]) == 2
    captured = capsys.readouterr()
    shown = url.replace("user:s3cret", "***")
    assert captured.err.startswith(f"obskit: error: --prometheus {shown!r}: {problem}; expected the server's base URL")
    assert "Traceback" not in captured.err + captured.out
    assert "s3cret" not in captured.err


@contextmanager
def not_http_peer(greeting: bytes) -> Iterator[str]:
    """A TCP server on 127.0.0.1 that writes ``greeting`` (an sshd banner, say) and hangs up, like a non-HTTP port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                # Read the request first: closing with unread data would reset the connection instead.
                conn.settimeout(0.2)
                try:
                    while conn.recv(65536):
                        pass
                except TimeoutError:
                    pass
                conn.sendall(greeting)
                conn.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        server.close()


@pytest.mark.parametrize(
    ("greeting", "reason"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", "did not answer with HTTP (BadStatusLine: SSH-2.0-OpenSSH_9.2"),
        (b"\x00\x00\x18\x04\x00\x00\x00\x00\x00", "did not answer with HTTP (BadStatusLine"),  # an HTTP/2 frame
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{", "did not answer with HTTP (IncompleteRead"),
        (b"", "is unreachable: Remote end closed connection without response"),  # RemoteDisconnected
    ],
)
def test_non_http_peer_is_inconclusive(greeting: bytes, reason: str) -> None:
    """A port where sshd or a gRPC server listens (http.client errors) is inconclusive: exit 2, not a traceback."""
    with not_http_peer(greeting) as url:
        code, out = gate(url, timeout=5)
    assert code == 2
    assert f"INCONCLUSIVE avail, fast: {url} {reason}" in out


def test_unexpected_json_is_inconclusive() -> None:
    """JSON that is not a query result (a proxy's own JSON) is inconclusive, not a traceback."""
    with fake_prometheus(lambda q: (200, {"status": "success", "data": ["not", "a", "result"]})) as (url, _):
        code, out = gate(url)
    assert code == 2
    assert "did not answer with the Prometheus API (unexpected result" in out


def test_credentials_are_sent_as_basic_auth_and_masked() -> None:
    """user:password@ in --prometheus becomes an Authorization header and never appears in the output."""
    seen: list[tuple[str, str | None]] = []
    with fake_prometheus(answers(vector(1), vector(1)), requests=seen) as (url, _):
        authed = url.replace("http://", "http://gate%40ci:s3cret%21@")
        code, out = gate(authed)
    assert code == 0
    token = base64.b64encode(b"gate@ci:s3cret!").decode()
    assert seen == [("/api/v1/query", f"Basic {token}")] * 2
    assert "s3cret" not in out
    # The password appears in no error either: HTTP errors, and a server that is not there.
    with fake_prometheus(lambda q: (401, {"error": "bad password s3cret!"})) as (url, _):
        code, out = gate(url.replace("http://", "http://gate:s3cret!@"))
    assert code == 2
    assert f"{url.replace('http://', 'http://***@')} answered HTTP 401: bad password ***" in out
    assert "s3cret" not in out
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        code, out = gate(f"http://gate:s3cret@127.0.0.1:{port}")
    assert code == 2
    assert f"http://***@127.0.0.1:{port} is unreachable: [Errno 111] Connection refused" in out
    assert "s3cret" not in out
    # A one-letter password is masked in the URL but not scrubbed from other text ("Connection ref***sed").
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        code, out = gate(f"http://u:u@127.0.0.1:{port}")
    assert f"http://***@127.0.0.1:{port} is unreachable: [Errno 111] Connection refused" in out


def test_query_string_and_prefix_are_kept() -> None:
    """The API path is joined onto the URL's path; a query string (a proxy's token) stays a query string."""
    seen: list[tuple[str, str | None]] = []
    with fake_prometheus(answers(vector(1), vector(1)), prefix="/prom", requests=seen) as (url, _):
        code, _ = gate(url + "/prom/?tenant=a&x=1#frag")
    assert code == 0
    assert seen == [("/prom/api/v1/query?tenant=a&x=1", None)] * 2


def test_json_output_names_the_selector() -> None:
    """--json says which series were gated, as the rules' slo_selector label and the table title do."""
    with fake_prometheus(answers(vector(1), vector(1))) as (url, _):
        out = io.StringIO()
        console = Console(file=out, width=200, highlight=False)
        code = run_gate(SLO, url, console=console, json_output=True, override=parse_selector('job="canary"'))
    assert code == 0
    assert json.loads(out.getvalue())["selector"] == 'job="canary"'


def test_credentials_do_not_follow_a_redirect() -> None:
    """Basic auth goes to the URL given, not to wherever a redirect points (another host)."""
    seen: list[str | None] = []

    class Elsewhere(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(Elsewhere) as port:
        target = f"http://localhost:{port}/stolen"
        with fake_prometheus(lambda q: (302, {"Location": target}), redirect=True) as (url, _):
            code, out = gate(url.replace("http://", "http://gate:s3cret@"))
    assert code == 2
    assert seen == [None]
    assert "s3cret" not in out
