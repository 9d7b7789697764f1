"""benchmarks/bench_aftereffect.py: the after-effect table, each case against the loop after a bare request."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_aftereffect


def _generation(after_obskit: float) -> dict[str, list[float]]:
    """Four turns per case; the loop takes 1,000 µs after a bare request, ``after_obskit`` after an obskit one."""
    return {
        "nothing": [1000.0, 1001.0, 999.0, 1000.0],
        bench_aftereffect.REFERENCE: [1000.0, 1000.0, 1000.0, 1000.0],
        # One outlier turn (a noise burst) does not move the median.
        bench_aftereffect.OBSKIT: [after_obskit, after_obskit, after_obskit + 900.0, after_obskit],
    }


def test_each_case_is_compared_with_the_loop_after_a_bare_request() -> None:
    lines = bench_aftereffect.summarize([_generation(1020.0), _generation(1010.0), _generation(1012.0)])
    obskit_row = next(line for line in lines if line.startswith(f"| {bench_aftereffect.OBSKIT} |"))
    assert "1020.0 (+20.0, +2.00%" in obskit_row
    assert "1010.0 (+10.0, +1.00%" in obskit_row
    reference_row = next(line for line in lines if line.startswith(f"| {bench_aftereffect.REFERENCE} |"))
    assert reference_row.count("(+0.0, +0.00%") == 3
    # The headline: the median of the generations, with their range.
    assert lines[-1] == (
        "After an obskit request the loop ran +1.20% [+1.00% to +2.00%] against after a bare request "
        "(median of generations)."
    )


def test_halves_show_whether_a_difference_holds_across_the_turns() -> None:
    generation = _generation(1000.0)
    generation["nothing"] = [1050.0, 1000.0, 1050.0, 1000.0]  # even turns slow, odd turns not
    row = next(line for line in bench_aftereffect.summarize([generation]) if line.startswith("| nothing |"))
    assert "halves +5.00%, +0.00%" in row


def test_the_stock_opentelemetry_request_gets_a_headline_of_its_own() -> None:
    generations = []
    for after_obskit, after_stock in ((1020.0, 1002.0), (1010.0, 1004.0), (1012.0, 1000.0)):
        generation = _generation(after_obskit)
        generation[bench_aftereffect.STOCK] = [after_stock] * 4
        generations.append(generation)
    lines = bench_aftereffect.summarize(generations)
    assert lines[-2].startswith("After an obskit request the loop ran +1.20% [+1.00% to +2.00%]")
    assert lines[-1] == (
        "After a stock OpenTelemetry request the loop ran +0.20% [+0.00% to +0.40%] against after a bare request "
        "(median of generations)."
    )


def test_the_loop_kind_reaches_each_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """--loop-kind sha256: every generation's child times C-code loops, and the table's heading says so."""
    commands: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        commands.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(_generation(1010.0)).encode())

    monkeypatch.setattr(bench_aftereffect.subprocess, "run", fake_run)
    args = argparse.Namespace(config="obskit_full", generations=2, loop=26, loop_kind="sha256", turns=4, seed=1, cpu="")
    lines = bench_aftereffect.measure("fastapi", args, {"grpc": 1})
    assert len(commands) == 2
    assert all("--loop-kind=sha256" in cmd and "--loop=26" in cmd for cmd in commands)
    assert lines[0].startswith("After-effect, fastapi, obskit_full: 26 SHA-256 digests of 64 KB (C code) timed")
