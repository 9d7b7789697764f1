"""benchmarks/verdict.py: the issue's targets judged on the median of several bench_http.py runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import verdict


def _run(tmp_path: Path, name: str, fastapi_full: float, fastapi_full_cpu: float) -> Path:
    summary: dict[str, Any] = {
        "ratios": {"fastapi/bare": 1.0, "fastapi/obskit_full": fastapi_full},
        "cpu_ratios": {"fastapi/bare": 1.0, "fastapi/obskit_full": fastapi_full_cpu},
        "added_cpu_us": {"fastapi/obskit_full": 70.0},
    }
    directory = tmp_path / name
    directory.mkdir()
    (directory / "http-summary.json").write_text(json.dumps(summary))
    return directory


def test_the_median_across_runs_is_judged_not_any_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Runs at 0.65x, 0.71x and 0.77x: the median 0.71x meets 0.70x, though one run alone does not."""
    runs = [_run(tmp_path, "a", 0.65, 0.66), _run(tmp_path, "b", 0.71, 0.72), _run(tmp_path, "c", 0.77, 0.77)]
    assert verdict.main([str(r) for r in runs]) == 0
    out = capsys.readouterr().out
    assert (
        "| obskit_full on fastapi >= 0.70x | 3 | 0.65, 0.71, 0.77 | 0.710x | 0.66, 0.72, 0.77 | 0.720x | +70 | met |"
        in out
    )
    assert "flask" not in out  # no data, no verdict


def test_both_medians_must_reach_the_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A req/s median at the target with a CPU median below it is not met (bench_http.py's rule)."""
    runs = [_run(tmp_path, name, 0.70, 0.69) for name in "abc"]
    assert verdict.main([str(r / "http-summary.json") for r in runs]) == 1
    assert "**not met**" in capsys.readouterr().out


def test_fewer_than_three_runs_warn_and_bad_input_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert verdict.main([str(_run(tmp_path, "a", 0.8, 0.8))]) == 0
    assert "warning: 1 run(s)" in capsys.readouterr().err
    (tmp_path / "junk.json").write_text("{}")
    assert verdict.main([str(tmp_path / "junk.json")]) == 2
    assert "not a bench_http.py summary" in capsys.readouterr().err
