"""benchmarks/bench_routes.py: the routes-scaling verdict, from paired turns and the median of generations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_routes


def _samples(at10: float, at1000: float, walk: float | None = None) -> dict[str, list[float]]:
    """Three turns per app; obskit's added µs per turn is the given overhead, except one outlier turn each."""
    samples = {
        "bare@10": [80.0, 81.0, 79.0],
        "obskit@10": [80.0 + at10, 81.0 + at10, 79.0 + at10 + 500.0],
        "bare@1000": [1000.0, 1100.0, 1050.0],
        "obskit@1000": [1000.0 + at1000, 1100.0 + at1000 - 400.0, 1050.0 + at1000],
        "background": [30.0, 31.0, 29.0],
    }
    if walk is not None:
        samples["bare@10+walk"] = [900.0, 910.0, 905.0]
        samples["obskit@10+walk"] = [900.0 + walk, 910.0 + walk, 905.0 + walk]
    return samples


def _measure(monkeypatch: pytest.MonkeyPatch, generations: list[dict[str, list[float]]], framework: str) -> str:
    queue = list(generations)

    def fake_generation(*_args: Any) -> dict[str, list[float]]:
        return queue.pop(0)

    monkeypatch.setattr(bench_routes, "_generation", fake_generation)
    args = argparse.Namespace(generations=len(generations), slices=3, requests=30, seed=1, loop=0, config="obskit_full")
    return "\n".join(bench_routes.measure(framework, args, {}))


def test_overhead_is_the_median_of_paired_turns() -> None:
    """One turn's outlier (a noise burst on one app of a pair) does not move a generation's overhead."""
    assert bench_routes.added(_samples(50.0, 60.0), "10") == 50.0
    assert bench_routes.added(_samples(50.0, 60.0), "1000") == 60.0


def test_the_median_generation_is_judged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ratios 1.05x, 1.30x and 1.08x: the median, 1.08x, meets 1.10x though one generation does not."""
    text = _measure(monkeypatch, [_samples(50, 52.5), _samples(50, 65), _samples(50, 54)], "flask")
    assert "| flask | 1.08x [1.05x to 1.30x] | <= 1.10x | met | - |" in text


def test_a_median_over_the_target_is_not_met(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _measure(monkeypatch, [_samples(50, 60), _samples(50, 65), _samples(50, 54)], "fastapi")
    assert "| fastapi | 1.20x [1.08x to 1.30x] | <= 1.10x | **not met** |" in text


def test_the_control_compares_1000_routes_with_the_walk_in_the_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _measure(monkeypatch, [_samples(50, 60, walk=60), _samples(50, 66, walk=55)], "fastapi")
    assert "| 1,000 routes / 10 routes + the same walk in the handler |" in text.splitlines()[-3]
    # Generation 2: +66 at 1,000 routes against +55 with the walk in the handler.
    assert "| 2 | 80.0 | +50.0 | 1050.0 | +66.0 | **1.32x** | 905.0 | +55.0 | 1.20x | 30.0 |" in text
    assert text.splitlines()[-1].endswith("| 1.10x [1.00x to 1.20x] |")
