from __future__ import annotations

import json
from pathlib import Path

import yaml

from obskit import _semconv as sc
from obskit.slo import load_slo_file
from obskit.slo._dashboard import build_dashboard, panel_queries, render_dashboard

from . import _promtool

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "slo.yaml"


def substitute(expr: str) -> str:
    """What Grafana does before sending a query: fill in $__rate_interval and the job variable."""
    return expr.replace("$__rate_interval", "1m").replace("$job", ".+")


def test_dashboard_structure() -> None:
    """Grafana JSON model: datasource and job variables, unique ids, every panel bound to ${datasource}."""
    board = build_dashboard(load_slo_file(EXAMPLE))
    assert board["uid"] == "obskit-iris-classifier"
    assert board["title"] == "obskit: iris-classifier"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["job"]["includeAll"] is True
    assert variables["job"]["allValue"] == ".+"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    # No two panels overlap.
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        g = panel["gridPos"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & area, panel["title"]
        cells |= area


def test_dashboard_sections() -> None:
    """RED per route, per-stage percentiles per model, error ratio and burn rate per SLO, obskit's health."""
    board = build_dashboard(load_slo_file(EXAMPLE))
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == [
        "HTTP: rate, errors, duration per route",
        "Models: calls, errors and duration per stage",
        "SLOs: iris-classifier",
        "obskit health",
    ]
    queries = dict(panel_queries(board))
    text = "\n".join(expr for _, expr in panel_queries(board))
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le, http_route)" in text
        assert f"histogram_quantile({q}, sum by (le, model_name, model_stage)" in text
    for name in ("predict-availability", "predict-latency", "inference-availability", "inference-latency"):
        assert f"{name}: error ratio" in queries
        assert f"{name}: burn rate" in queries
    for metric in (
        sc.PROM_TELEMETRY_EXPORTED,
        sc.PROM_TELEMETRY_DROPPED,
        sc.PROM_CARDINALITY_OVERFLOW,
        sc.PROM_INTERNAL_ERRORS,
    ):
        assert metric in text
    assert "http_route" in queries["Request rate by route"]
    assert queries["predict-availability: burn rate"].endswith(") / 0.001")


def test_dashboard_without_slo_file() -> None:
    """Without --slo there are no SLO panels, and the JSON text parses back to the model."""
    board = build_dashboard()
    assert board["uid"] == "obskit-overview"
    assert not any(p["title"].startswith("SLOs") for p in board["panels"])
    assert json.loads(render_dashboard()) == board


def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses every panel query (after Grafana's variable substitution) as a rule expression."""
    board = build_dashboard(load_slo_file(EXAMPLE))
    rules = [
        {"record": f"panel:query_{i}:check", "expr": substitute(e)} for i, (_, e) in enumerate(panel_queries(board))
    ]
    path = tmp_path / "panels.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in _promtool.check_rules(path)
