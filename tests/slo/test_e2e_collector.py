"""The Collector path: a `prometheus` exporter's exposition (job and instance set from the resource) scraped by a
real Prometheus with the scrape job docs/slo.md and docs/deployment.md document (honor_labels: true), next to a
default scrape job that renames the labels to exported_job/exported_instance."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from obskit.slo._gate import run_gate
from obskit.slo._model import parse_slo

from ._fake_prometheus import serving
from ._stack import ROOT, Prometheus, wait_for

pytestmark = pytest.mark.e2e

SERVICE = "iris-classifier"
LABELS = (
    f'http_request_method="POST",http_response_status_code="200",http_route="/predict",instance="9f0e",job="{SERVICE}"'
)


def documented_scrape_job(page: str) -> dict[str, Any]:
    """The one scrape job with honor_labels in the page's YAML blocks."""
    text = (ROOT / "docs" / page).read_text()
    docs = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    jobs = [j for d in docs if isinstance(d, dict) for j in d.get("scrape_configs", []) if "honor_labels" in j]
    assert len(jobs) == 1, page
    job: dict[str, Any] = jobs[0]
    return job


@pytest.fixture
def collector() -> Iterator[str]:
    """What the Collector's prometheus exporter serves: one counter that grows by 10 at every scrape."""
    scrapes = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            scrapes[0] += 1
            count = scrapes[0] * 10
            body = (
                "# TYPE http_server_request_duration_seconds histogram\n"
                f'http_server_request_duration_seconds_bucket{{{LABELS},le="+Inf"}} {count}\n'
                f"http_server_request_duration_seconds_sum{{{LABELS}}} {count * 0.01}\n"
                f"http_server_request_duration_seconds_count{{{LABELS}}} {count}\n"
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serving(Handler) as port:
        yield f"127.0.0.1:{port}"


def test_documented_scrape_job_keeps_the_collectors_job(tmp_path: Path, collector: str) -> None:
    """With the documented honor_labels: true the default selector job="<service>" finds the series and the gate
    passes; a default scrape of the same endpoint has them under exported_job instead."""
    documented = documented_scrape_job("slo.md")
    assert documented_scrape_job("deployment.md") == documented
    job = {**documented, "static_configs": [{"targets": [collector]}]}
    default = {"job_name": "default-scrape", "static_configs": [{"targets": [collector]}]}
    prometheus = Prometheus([], [], tmp_path, scrape_configs=[job, default])
    try:
        prometheus.wait_ready()
        count = "http_server_request_duration_seconds_count"
        # Two scrapes by each job (they scrape independently): the gate reads the honor_labels job's increase.
        wait_for(
            lambda: (
                prometheus.value(f'sum(increase({count}{{exported_job="{SERVICE}"}}[1m]))')
                and prometheus.value(f'sum(increase({count}{{job="{SERVICE}"}}[1m]))')
            ),
            "two scrapes by each job",
            30,
            prometheus.process.log,
        )
        series = sorted((labels for labels, _ in prometheus.query(count)), key=lambda labels: labels["job"])
        assert [(s["job"], s.get("exported_job"), s["instance"]) for s in series] == [
            ("default-scrape", SERVICE, collector),
            (SERVICE, None, "9f0e"),
        ]
        slo = parse_slo(f"service: {SERVICE}\nobjectives: [{{name: a, type: availability, target: 99}}]\n")
        out = io.StringIO()
        code = run_gate(slo, prometheus.url, window="1m", console=Console(file=out, width=200))
        assert code == 0, out.getvalue()
        assert "gate: PASS (1 objectives)" in out.getvalue()
    finally:
        prometheus.process.stop()
