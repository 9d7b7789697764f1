"""Grafana dashboard (JSON model): RED per route, model stage latency, SLO burn, and obskit's own health.

Every query uses the same builder as the rules and the gate; a ``datasource`` variable picks the Prometheus
and a ``job`` variable (multi-value, "All" = every job) filters the RED, stage and health panels. The SLO
panels use the SLO file's selector, so they show exactly what the alerts and the gate see.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any, Final

from .. import _semconv as sc
from ._model import Matcher, SLOFile
from ._rules import (
    BURN_ALERTS,
    PROM_MODEL_NAME,
    PROM_MODEL_STAGE,
    PROM_ROUTE,
    effective_selector,
    http_sli,
    model_sli,
    number,
    series,
    sli,
)

RATE_INTERVAL: Final = "$__rate_interval"
JOB_VARIABLE: Final = "job"
DATASOURCE: Final = {"type": "prometheus", "uid": "${datasource}"}
QUANTILES: Final = (0.5, 0.95, 0.99)
_JOB: Final = Matcher("job", "=~", f'"${JOB_VARIABLE}"')
_ZERO: Final = " or on() vector(0)"  # a healthy process may never have dropped anything: show 0, not "No data"


class _Layout:
    """Hands out panel ids and grid positions: rows span the 24-column width, panels fill a line left to right."""

    def __init__(self) -> None:
        self.next_id = 1
        self.x = self.y = self.height = 0

    def row(self, title: str) -> dict[str, Any]:
        self._break()
        panel = {"id": self._id(), "type": "row", "title": title, "collapsed": False, "panels": []}
        panel["gridPos"] = {"h": 1, "w": 24, "x": 0, "y": self.y}
        self.y += 1
        return panel

    def place(self, panel: dict[str, Any], width: int = 12, height: int = 8) -> dict[str, Any]:
        if self.x + width > 24:
            self._break()
        panel["id"] = self._id()
        panel["gridPos"] = {"h": height, "w": width, "x": self.x, "y": self.y}
        self.x += width
        self.height = max(self.height, height)
        return panel

    def _break(self) -> None:
        if self.x:
            self.y += self.height
            self.x = self.height = 0

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def _target(expr: str, legend: str, ref: str = "A") -> dict[str, Any]:
    return {"refId": ref, "datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "range": True}


def _panel(
    title: str, targets: Sequence[dict[str, Any]], unit: str, description: str = "", kind: str = "timeseries"
) -> dict[str, Any]:
    refs = "ABCDEFGH"
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [dict(t, refId=refs[i]) for i, t in enumerate(targets)],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {},
    }


def _quantiles(metric: str, matchers: Sequence[Matcher], by: Sequence[str], legend: str) -> list[dict[str, Any]]:
    buckets = series(f"{metric}_bucket", matchers)
    grouping = ", ".join(["le", *by])
    return [
        _target(
            f"histogram_quantile({q}, sum by ({grouping}) (rate({buckets}[{RATE_INTERVAL}])))",
            f"p{number(Decimal(repr(q)) * 100)} {legend}",
        )
        for q in QUANTILES
    ]


def _http_panels(layout: _Layout) -> Iterator[dict[str, Any]]:
    count = series(f"{sc.PROM_HTTP_DURATION}_count", [_JOB])
    availability = http_sli([_JOB])
    yield layout.row("HTTP: rate, errors, duration per route")
    yield layout.place(
        _panel(
            "Request rate by route",
            [
                _target(
                    f"sum by (http_route, http_request_method) (rate({count}[{RATE_INTERVAL}]))",
                    "{{http_request_method}} {{http_route}}",
                )
            ],
            "reqps",
            "Requests per second from http.server.request.duration's count.",
        ),
        8,
    )
    yield layout.place(
        _panel(
            "Error ratio by route",
            [_target(availability.error_ratio(RATE_INTERVAL, by=[PROM_ROUTE]), "{{http_route}}")],
            "percentunit",
            "Share of requests that were a 5xx or raised (error.type set).",
        ),
        8,
    )
    yield layout.place(
        _panel(
            "Duration by route (p50, p95, p99)",
            _quantiles(sc.PROM_HTTP_DURATION, [_JOB], [PROM_ROUTE], "{{http_route}}"),
            "s",
            "histogram_quantile over http.server.request.duration's buckets.",
        ),
        8,
    )


def _model_panels(layout: _Layout) -> Iterator[dict[str, Any]]:
    count = series(f"{sc.PROM_MODEL_DURATION}_count", [_JOB])
    availability = model_sli([_JOB])
    by = [PROM_MODEL_NAME, PROM_MODEL_STAGE]
    legend = "{{model_name}} {{model_stage}}"
    yield layout.row("Models: calls, errors and duration per stage")
    yield layout.place(
        _panel(
            "Stage calls by model",
            [_target(f"sum by (model_name, model_stage) (rate({count}[{RATE_INTERVAL}]))", legend)],
            "ops",
            "Calls per second of each decorated stage.",
        )
    )
    yield layout.place(
        _panel(
            "Stage error ratio by model",
            [_target(availability.error_ratio(RATE_INTERVAL, by=by), legend)],
            "percentunit",
            "Share of stage calls that raised (error.type set).",
        )
    )
    for q in QUANTILES:
        p = number(Decimal(repr(q)) * 100)
        buckets = series(f"{sc.PROM_MODEL_DURATION}_bucket", [_JOB])
        yield layout.place(
            _panel(
                f"Stage duration p{p} by model",
                [
                    _target(
                        f"histogram_quantile({q}, sum by (le, model_name, model_stage) "
                        f"(rate({buckets}[{RATE_INTERVAL}])))",
                        legend,
                    )
                ],
                "s",
                f"p{p} of obskit.model.duration per model and stage.",
            ),
            8,
        )


def _slo_panels(layout: _Layout, slo: SLOFile, override: Sequence[Matcher]) -> Iterator[dict[str, Any]]:
    selector = effective_selector(slo, override)
    page = BURN_ALERTS[0]
    yield layout.row(f"SLOs: {slo.service}")
    for objective in slo.objectives:
        indicator = sli(objective, selector)
        budget = number(objective.error_budget)
        what = f"{objective.type}, {objective.describe_scope()}, target {number(Decimal(repr(objective.target)))}%"
        yield layout.place(
            _panel(
                f"{objective.name}: error ratio",
                [_target(indicator.error_ratio("5m"), "5m"), _target(indicator.error_ratio("1h"), "1h")],
                "percentunit",
                f"Bad-event ratio ({what}); the error budget is {budget}.",
            ),
            8,
        )
        burn = _panel(
            f"{objective.name}: burn rate",
            [_target(f"({indicator.error_ratio(w)}) / {budget}", w) for w in ("5m", "1h", "6h")],
            "x",
            f"Error ratio / error budget; {number(page.factor(objective.window_days))} for an hour pages.",
        )
        burn["fieldConfig"]["defaults"]["thresholds"] = {
            "mode": "absolute",
            "steps": [
                {"color": "green", "value": None},
                {"color": "orange", "value": float(BURN_ALERTS[2].factor(objective.window_days))},
                {"color": "red", "value": float(page.factor(objective.window_days))},
            ],
        }
        burn["fieldConfig"]["defaults"]["custom"] = {"thresholdsStyle": {"mode": "line"}}
        yield layout.place(burn, 8)
        yield layout.place(
            _panel(
                f"{objective.name}: error budget left ({objective.window})",
                [_target(f"1 - ({indicator.error_ratio(objective.window)}) / {budget}", "budget left")],
                "percentunit",
                f"Share of the {objective.window} error budget not yet spent (negative: overspent).",
                kind="stat",
            ),
            8,
        )


def _health_panels(layout: _Layout) -> Iterator[dict[str, Any]]:
    def rate(metric: str, by: str) -> str:
        grouping = f" by ({by}) " if by else ""
        return f"sum{grouping}(rate({series(metric, [_JOB])}[{RATE_INTERVAL}])){_ZERO}"

    yield layout.row("obskit health")
    for title, metric, by, legend, description in (
        (
            "Telemetry exported",
            sc.PROM_TELEMETRY_EXPORTED,
            "obskit_signal",
            "{{obskit_signal}}",
            "Spans, metric points and logs handed to the exporters, per second.",
        ),
        (
            "Telemetry dropped",
            sc.PROM_TELEMETRY_DROPPED,
            "obskit_signal, obskit_reason",
            "{{obskit_signal}} {{obskit_reason}}",
            "Items dropped (buffer full, exporter failing), per second.",
        ),
        (
            "Cardinality overflow",
            sc.PROM_CARDINALITY_OVERFLOW,
            "obskit_metric, obskit_attribute",
            "{{obskit_metric}} {{obskit_attribute}}",
            "Label values replaced by _OTHER, per second.",
        ),
        (
            "Internal errors",
            sc.PROM_INTERNAL_ERRORS,
            "",
            "internal errors",
            "Telemetry failures obskit swallowed instead of raising into the application.",
        ),
    ):
        yield layout.place(_panel(title, [_target(rate(metric, by), legend)], "ops", description), 6)


def build_dashboard(slo: SLOFile | None = None, *, override: Sequence[Matcher] = ()) -> dict[str, Any]:
    """The dashboard's JSON model; SLO panels only when ``slo`` is given."""
    layout = _Layout()
    panels = [*_http_panels(layout), *_model_panels(layout)]
    if slo is not None:
        panels += list(_slo_panels(layout, slo, override))
    panels += list(_health_panels(layout))
    name = slo.service if slo is not None else "overview"
    return {
        "uid": ("obskit-" + re.sub(r"[^A-Za-z0-9_-]+", "-", name))[:40],
        "title": f"obskit: {name}",
        "description": "Generated by `obskit dashboard`; metric names are obskit's OpenTelemetry-to-Prometheus names.",
        "tags": ["obskit", "opentelemetry", "slo"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": JOB_VARIABLE,
                    "label": "job",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {
                        "query": f"label_values({sc.PROM_HTTP_DURATION}_count, job)",
                        "refId": "PrometheusVariableQueryEditor-VariableQuery",
                    },
                    "definition": f"label_values({sc.PROM_HTTP_DURATION}_count, job)",
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".+",
                    "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                    "refresh": 2,
                    "sort": 1,
                    "hide": 0,
                },
            ]
        },
        "panels": panels,
    }


def render_dashboard(slo: SLOFile | None = None, *, override: Sequence[Matcher] = ()) -> str:
    """The dashboard as JSON text (``obskit dashboard``)."""
    return json.dumps(build_dashboard(slo, override=override), indent=2) + "\n"


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel, rows' nested panels included."""
    found: list[tuple[str, str]] = []
    for panel in dashboard.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            found += [(inner.get("title", ""), t["expr"]) for t in inner.get("targets", []) if "expr" in t]
    return found
