"""The issue's HTTP targets judged over several runs: the median of each paired ratio across runs.

One ``bench_http.py`` run moves by ±0.05x on the shared 2-core machines this project is measured on (six runs of
the same request-path code read FastAPI full at 0.65x to 0.77x), so a target at the line cannot be decided by one
run. This reads the ``http-summary.json`` of each run given (a run's ``--out`` directory, or the file itself),
prints every run's req/s and CPU ratio for each target with their medians, and judges the medians by
``bench_http.py``'s own rule (met when both are at or above the target).

Run: ``python benchmarks/verdict.py /tmp/runs/A /tmp/runs/B /tmp/runs/C`` (three runs or more; fewer are judged
too, with a warning). Exit status 0 when every target with data is met, 1 otherwise, 2 on unusable input.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_http import TARGETS, target_met

MIN_RUNS = 3


def load(path: Path) -> dict[str, Any]:
    """A run's summary: ``path`` itself, or the ``http-summary.json`` in the directory ``path``."""
    file = path / "http-summary.json" if path.is_dir() else path
    data: dict[str, Any] = json.loads(file.read_text())
    if "ratios" not in data or "cpu_ratios" not in data:
        raise ValueError(f"{file}: not a bench_http.py summary (no ratios)")
    return data


def judge(runs: list[dict[str, Any]]) -> tuple[list[str], bool]:
    """Markdown lines for the targets over ``runs``, and whether every target with data is met."""
    lines = [
        f"Over {len(runs)} run(s): each run's paired ratio to bare, then the median across runs.",
        "",
        "| issue target | runs | req/s ratios | median | CPU ratios | median | added CPU µs (median) | verdict |",
        "|---|---:|---|---:|---|---:|---:|---|",
    ]
    all_met = True
    for framework, variant, target in TARGETS:
        key = f"{framework}/{variant}"
        pairs = [
            (run["ratios"][key], run["cpu_ratios"][key], run.get("added_cpu_us", {}).get(key))
            for run in runs
            if key in run["ratios"] and key in run["cpu_ratios"]
        ]
        if not pairs:
            continue
        rps = [p[0] for p in pairs]
        cpu = [p[1] for p in pairs]
        added = [p[2] for p in pairs if p[2] is not None]
        rps_median, cpu_median = statistics.median(rps), statistics.median(cpu)
        met = target_met(rps_median, cpu_median, target)
        all_met = all_met and met
        lines.append(
            f"| {variant} on {framework} >= {target:.2f}x | {len(pairs)} | {', '.join(f'{r:.2f}' for r in rps)} | "
            f"{rps_median:.3f}x | {', '.join(f'{c:.2f}' for c in cpu)} | {cpu_median:.3f}x | "
            f"{f'+{statistics.median(added):.0f}' if added else '-'} | {'met' if met else '**not met**'} |"
        )
    return lines, all_met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="bench_http.py --out directories or summary files")
    args = parser.parse_args(argv)
    try:
        runs = [load(path) for path in args.runs]
    except (OSError, ValueError) as exc:
        print(f"verdict.py: {exc}", file=sys.stderr)
        return 2
    if len(runs) < MIN_RUNS:
        print(f"warning: {len(runs)} run(s); judge a target at the line over {MIN_RUNS} or more\n", file=sys.stderr)
    lines, all_met = judge(runs)
    print("\n".join(lines))
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
