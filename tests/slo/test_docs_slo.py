from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from obskit import _semconv as sc
from obskit.slo import load_slo_file
from obskit.slo._argo import build_analysis_template
from obskit.slo._model import parse_slo
from obskit.slo._rules import BURN_ALERTS, good_ratio_query, number

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "slo.md").read_text()
EXAMPLE = load_slo_file(ROOT / "examples" / "slo.yaml")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC, flags=re.DOTALL)


def test_documented_slo_file_is_the_example() -> None:
    """The SLO file shown in docs/slo.md is valid and is examples/slo.yaml's content."""
    [doc_file] = [b for b in blocks("yaml") if b.startswith("service:")]
    slo = parse_slo(doc_file)
    assert slo.objectives == EXAMPLE.objectives


def test_python_snippet_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python example runs from the repository root."""
    monkeypatch.chdir(ROOT)
    for block in blocks("python"):
        exec(compile(block, "docs/slo.md", "exec"), {})


def test_burn_rate_table_matches_the_rules() -> None:
    """The documented windows and factors are the ones the rules use."""
    for alert in BURN_ALERTS:
        row = (
            f"| {alert.severity} | {alert.long} | {alert.short} | {number(alert.budget_spent * 100)}% "
            f"| {number(alert.factor(30))} | {number(alert.factor(28))} |"
        )
        assert row in DOC


def test_documented_queries_are_generated_ones() -> None:
    """The PromQL and the AnalysisTemplate shown are what the builder produces for the example."""
    query = good_ratio_query(EXAMPLE.objectives[0], EXAMPLE.selector, "5m")
    promql = [" ".join(b.split()) for b in blocks("promql")]
    assert query in promql
    latency = good_ratio_query(EXAMPLE.objectives[1], EXAMPLE.selector, "5m")
    assert latency in promql
    [template] = [yaml.safe_load(b) for b in blocks("yaml") if b.startswith("apiVersion: argoproj.io")]
    generated = build_analysis_template(EXAMPLE)
    assert template["spec"]["metrics"][0] == generated["spec"]["metrics"][0]
    assert template["metadata"] == generated["metadata"]


def test_bucket_boundaries_listed() -> None:
    """The boundaries listed in the docs are _semconv's."""
    for buckets in (sc.HTTP_DURATION_BUCKETS, sc.MODEL_DURATION_BUCKETS):
        assert "(" + ", ".join(f"{b:g}" for b in buckets) + ")" in DOC


def test_every_subcommand_and_exit_code_is_documented() -> None:
    """slo render, slo argo, gate and dashboard appear with the gate's three exit codes."""
    for text in ("obskit slo render", "obskit slo argo", "obskit gate", "obskit dashboard", "| 0 |", "| 1 |", "| 2 |"):
        assert text in DOC
