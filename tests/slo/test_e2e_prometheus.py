"""End to end: examples/fastapi_app.py under uvicorn with obskit's Prometheus pull endpoint, scraped every second
by a real Prometheus that also evaluates the rendered rules; `obskit gate`, the Argo queries and every dashboard
query run against it. Three copies of the service run at once: healthy, 5% errors, slow inference."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from obskit.slo import load_slo_file
from obskit.slo._argo import build_analysis_template
from obskit.slo._dashboard import build_dashboard, panel_queries
from obskit.slo._model import Matcher, SLOFile, parse_selector
from obskit.slo._rules import le_matcher, render_rules, series

from ._stack import ROOT, Prometheus, Service, Traffic, free_port, start_service, wait_for

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "slo.yaml"
HEALTHY, ERRORS, SLOW = "iris-classifier", "canary-errors", "canary-slow"
HTTP_COUNT = "http_server_request_duration_seconds_count"
MODEL_COUNT = "obskit_model_duration_seconds_count"


@dataclass
class Stack:
    prometheus: Prometheus
    services: dict[str, Service]
    slo: SLOFile


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("slo-e2e")
    slo = load_slo_file(EXAMPLE)
    rules = workdir / "rules.yaml"
    rules.write_text(render_rules(slo))
    # The same objectives for the error canary under its own service name, so a page alert can fire for it.
    canary = dataclasses.replace(slo, service=ERRORS, selector=(Matcher("job", "=", f'"{ERRORS}"'),))
    canary_rules = workdir / "canary-rules.yaml"
    canary_rules.write_text(render_rules(canary))
    # And the service's own objectives rendered for the canary's series (`slo render --selector`), the usual way.
    selector_rules = workdir / "selector-rules.yaml"
    selector_rules.write_text(render_rules(slo, parse_selector(f'job="{ERRORS}"')))

    services: dict[str, Service] = {}
    traffic = Traffic()
    prometheus: Prometheus | None = None
    try:
        services[HEALTHY] = start_service(HEALTHY, workdir)
        services[ERRORS] = start_service(ERRORS, workdir, IRIS_FAIL_EVERY="20")  # 5% of inferences raise: 500
        services[SLOW] = start_service(SLOW, workdir, IRIS_INFERENCE_DELAY="0.3")  # above the 0.25s threshold
        prometheus = Prometheus(list(services.values()), [rules, canary_rules, selector_rules], workdir)
        for service in services.values():
            wait_for(
                lambda s=service: httpx.get(s.url + "/healthz", timeout=1).status_code == 200,  # type: ignore[misc]
                f"{service.job} /healthz",
                30,
                service.process.log,
            )
        prometheus.wait_ready()
        traffic.drive(services[HEALTHY])
        traffic.drive(services[ERRORS])
        traffic.drive(services[SLOW], clients=4)
        prom = prometheus
        for job in services:
            for metric in (HTTP_COUNT, MODEL_COUNT):
                wait_for(
                    lambda j=job, m=metric: (prom.value(f'sum(increase({m}{{job="{j}"}}[1m]))') or 0) > 20,  # type: ignore[misc]
                    f"{metric} increasing for job {job}",
                    60,
                    lambda: prom.process.log() + "".join(s.process.log() for s in services.values()),
                )
        wait_for(
            lambda: prom.value(f'sum(increase({HTTP_COUNT}{{job="{ERRORS}",http_response_status_code="500"}}[1m]))'),
            "500s from the error canary",
            30,
        )
        yield Stack(prometheus, services, slo)
    finally:
        traffic.stop()
        if prometheus is not None:
            prometheus.process.stop()
        for service in services.values():
            service.process.stop()


def gate(stack: Stack, *extra: str, prometheus: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "obskit", "gate", "--prometheus", prometheus or stack.prometheus.url]
    return subprocess.run(
        [*argv, str(EXAMPLE), "--window", "1m", *extra], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_gate_passes_on_a_healthy_service(stack: Stack) -> None:
    """Healthy traffic: every objective passes, exit 0."""
    result = gate(stack)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gate: PASS (4 objectives)" in result.stdout
    for objective in stack.slo.objectives:
        assert objective.name in result.stdout


def test_gate_fails_on_a_canary_with_5_percent_errors(stack: Stack) -> None:
    """5% of requests fail: the availability objectives fail, by name, exit 1."""
    result = gate(stack, "--selector", f'job="{ERRORS}"')
    assert result.returncode == 1, result.stdout + result.stderr
    assert "gate: FAIL (predict-availability, inference-availability)" in result.stdout
    assert "FAIL predict-availability: 9" in result.stdout  # ~95% good
    assert "good is below the 99.9% target" in result.stdout


def test_gate_fails_on_a_slow_inference_stage(stack: Stack) -> None:
    """Inference takes 0.3s against a 0.25s threshold: only the stage latency objective fails, exit 1."""
    result = gate(stack, "--selector", f'job="{SLOW}"')
    assert result.returncode == 1, result.stdout + result.stderr
    assert "gate: FAIL (inference-latency)" in result.stdout
    assert "FAIL inference-latency: 0.00% good is below the 99% target" in result.stdout


def test_gate_is_inconclusive_without_data(stack: Stack) -> None:
    """A selector matching nothing: exit 2, naming the jobs that do have data."""
    result = gate(stack, "--selector", 'job="no-such-job"')
    assert result.returncode == 2, result.stdout + result.stderr
    assert "gate: INCONCLUSIVE" in result.stdout
    assert "no data: no matching series in the last 1m" in result.stdout
    assert f"exists for job '{ERRORS}', '{SLOW}', '{HEALTHY}'" in result.stdout


def test_gate_is_inconclusive_when_prometheus_is_down(stack: Stack) -> None:
    """Nothing listening at the URL: exit 2, saying Prometheus is unreachable."""
    url = f"http://127.0.0.1:{free_port()}"
    result = gate(stack, prometheus=url)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{url} is unreachable" in result.stdout


def test_rules_load_and_alert_in_real_prometheus(stack: Stack) -> None:
    """The rendered rules load cleanly; the error canary pages, the healthy service does not."""
    prom = stack.prometheus
    groups = prom.api("/api/v1/rules")["groups"]
    assert len(groups) == 3 * len(stack.slo.objectives)
    assert all(rule["health"] in ("ok", "unknown") for group in groups for rule in group["rules"])
    wait_for(
        lambda: len(prom.query(f'obskit:slo_error_ratio:rate5m{{slo_service="{HEALTHY}",slo_selector=""}}')) == 4,
        "recorded error ratios",
        20,
    )
    firing = f'ALERTS{{alertname="SLOErrorBudgetBurn",alertstate="firing",slo_service="{ERRORS}"'
    wait_for(lambda: prom.query(firing + ',slo_name="predict-availability",severity="page"}'), "page alert", 30)
    assert all(rule["health"] == "ok" for group in prom.api("/api/v1/rules")["groups"] for rule in group["rules"])
    assert prom.query(f'ALERTS{{slo_service="{HEALTHY}",slo_selector=""}}') == []


def test_rules_rendered_for_a_selector_record_their_own_series(stack: Stack) -> None:
    """The service's rules and the same rules rendered with --selector 'job="canary-errors"' share one Prometheus:
    each records its own error ratio, and only the canary's page alert fires, carrying slo_selector."""
    prom = stack.prometheus
    recorded = f'obskit:slo_error_ratio:rate1h{{slo_service="{HEALTHY}",slo_name="predict-availability"}}'
    wait_for(lambda: len(prom.query(recorded)) == 2, "two recorded series, one per selector", 20)
    by_selector = {labels.get("slo_selector", ""): value for labels, value in prom.query(recorded)}
    assert set(by_selector) == {"", f'job="{ERRORS}"'}
    assert by_selector[""] < 0.01 < by_selector[f'job="{ERRORS}"']  # healthy vs ~5% errors
    firing = (
        f'ALERTS{{alertname="SLOErrorBudgetBurn",alertstate="firing",slo_service="{HEALTHY}",'
        'slo_name="predict-availability",severity="page"}'
    )
    wait_for(lambda: prom.query(firing), "the canary's page alert", 30)
    assert {labels.get("slo_selector") for labels, _ in prom.query(firing)} == {f'job="{ERRORS}"'}


def test_argo_queries_return_data(stack: Stack) -> None:
    """Every AnalysisTemplate query returns one finite value, and its conditions give the gate's verdicts."""
    for job, failing in ((HEALTHY, set()), (ERRORS, {"predict-availability", "inference-availability"})):
        template = build_analysis_template(stack.slo, override=parse_selector(f'job="{job}"'), window="1m")
        for metric in template["spec"]["metrics"]:
            result = stack.prometheus.query(metric["provider"]["prometheus"]["query"])
            assert len(result) == 1, (job, metric["name"], result)
            value = result[0][1]
            assert math.isfinite(value), (job, metric["name"])
            threshold = float(metric["successCondition"].rsplit(">= ", 1)[1])
            assert (value >= threshold) == (metric["name"] not in failing), (job, metric["name"], value)


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    """Each panel query (Grafana variables filled in) returns data from the scraped example service."""
    board = build_dashboard(stack.slo)
    empty = []
    for title, expr in panel_queries(board):
        query = expr.replace("$__rate_interval", "1m").replace("$job", HEALTHY)
        if not stack.prometheus.query(query):
            empty.append((title, query))
    assert empty == []
    # Health panels fall back to 0; make sure at least obskit's own internal-errors counter is really there.
    assert stack.prometheus.query(f'obskit_internal_errors_total{{job="{HEALTHY}"}}')


def test_le_matcher_matches_the_real_exposition(stack: Stack) -> None:
    """The installed Python exporter writes whole-number boundaries as "1.0" for both histograms, and the matcher
    selects them. (The Go spelling "1", from the Collector's exporter, is covered by tests/slo/promtool/.)"""
    prom = stack.prometheus
    job = Matcher("job", "=", f'"{HEALTHY}"')
    for metric in ("http_server_request_duration_seconds_bucket", "obskit_model_duration_seconds_bucket"):
        whole = prom.query(f'count by (le) ({metric}{{job="{HEALTHY}",le=~`1(\\.0*)?`}})')  # any spelling of 1
        assert {labels["le"] for labels, _ in whole} == {"1.0"}, metric
        assert prom.query(f"count({series(metric, [job, le_matcher(1.0)])})"), metric
