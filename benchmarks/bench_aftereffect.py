"""After-effect: how fast the same pure-Python loop runs right after one request of each app, bare or obskit's.

    benchmarks/.venv/bin/python benchmarks/bench_aftereffect.py [--frameworks fastapi flask] [--generations 3]

Why (session 14): obskit's overhead per request grows with the request's other CPU time, by 3-4.5% of it on the
benchmark VM (bench_routes.py --loop), and part of the growth is the app's own code running slower inside an
instrumented request. This tool asks the same question with no request in flight. One child process holds a bare and an
obskit-instrumented app; in turns, in a shuffled order, it runs the loop once (a common state), then one case (one
bare request, one obskit request, one stock OpenTelemetry request, pieces of obskit's work, or nothing), then
times the loop again with the request thread's CPU clock. No request is in flight while the loop runs, so what
differs is only what ran just before it. On the session-14 VM the loop ran 1-2% slower right after an obskit
request than right after a bare one (after a stock OpenTelemetry request: 0-2%, by run), and did not 40 ms later. That
after-effect is not what makes the overhead grow inside a request: moving obskit's response-time span update to the
span's end removed it and left the growth as it was (benchmarks/README.md, Recommendations 5). On other hardware,
this is the quickest way to see whether either effect exists there at all.

A generation is one fresh child; each case's figure is the median of its turns, with the medians of the odd and
of the even turns beside it (if those halves disagree, the difference is noise).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

HERE = Path(__file__).resolve().parent
SRC = Path(os.environ.get("OBSKIT_SRC") or HERE.parent / "src")
REFERENCE: Final = "a bare request"
OBSKIT: Final = "an obskit request"
STOCK: Final = "a stock OpenTelemetry request (contrib + SDK, plain model)"


def _cases(framework: str) -> dict[str, Callable[[], Any]]:
    """Child: the work each case does before the timed loop (apps warmed up)."""
    sys.path[:0] = [str(HERE), str(SRC)]
    import _benchapp as bench  # VARIANT=obskit_*: obskit.init(); apps instrumented below (auto-instrument off)
    from bench_routes import app_driver
    from opentelemetry import metrics, trace

    plain = (bench.featurize, bench.infer, bench.to_labels)
    models = {"bare": plain, "obskit": bench.decorated_model(), "middleware": plain, "stock": plain}
    drivers: dict[str, Any] = {}
    for kind, model in models.items():
        drivers[kind] = app_driver(framework, "obskit" if kind == "middleware" else kind, model, 2)
        drivers[kind](300)
    featurize, infer, to_labels = models["obskit"]
    tracer = trace.get_tracer("bench_aftereffect")
    histogram = metrics.get_meter("bench_aftereffect").create_histogram("bench.aftereffect")
    rows = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]  # a request's batch (profile_obskit.BODY)

    def stages() -> None:
        with tracer.start_as_current_span("request"):
            to_labels(infer(featurize(rows)))

    def records() -> None:
        for _ in range(7):
            histogram.record(0.01, {"stage": "inference"})

    return {
        "nothing": lambda: None,
        REFERENCE: lambda: drivers["bare"](1),
        OBSKIT: lambda: drivers["obskit"](1),
        STOCK: lambda: drivers["stock"](1),
        "obskit's middleware only (plain model)": lambda: drivers["middleware"](1),
        "three obskit stages in a span": stages,
        "seven histogram records": records,
    }


def _child(args: argparse.Namespace) -> int:
    from bench_routes import spinner

    cases = _cases(args.framework)
    spin = spinner(args.loop, args.loop_kind)
    clock = time.thread_time_ns
    samples: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    rng = random.Random(args.seed)
    for _ in range(args.turns):
        rng.shuffle(names)
        for name in names:
            spin()
            cases[name]()
            t0 = clock()
            spin()
            samples[name].append((clock() - t0) / 1e3)
    print(json.dumps(samples), flush=True)
    import obskit

    obskit.shutdown(timeout=5)
    return 0


def summarize(generations: list[dict[str, list[float]]]) -> list[str]:
    """Per case and generation: the loop's median µs after it, and its difference to after a bare request."""
    references = [statistics.median(samples[REFERENCE]) for samples in generations]
    rows = []
    for name in generations[0]:
        cells = []
        for samples, reference in zip(generations, references, strict=True):
            values = samples[name]
            median = statistics.median(values)
            halves = [statistics.median(values[0::2]), statistics.median(values[1::2])]
            cells.append(
                f"{median:.1f} ({median - reference:+.1f}, {(median / reference - 1) * 100:+.2f}%; halves "
                + ", ".join(f"{(h / reference - 1) * 100:+.2f}%" for h in halves)
                + ")"
            )
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    headlines = []
    for case, label in ((OBSKIT, "an obskit request"), (STOCK, "a stock OpenTelemetry request")):
        if case in generations[0]:
            gaps = [statistics.median(s[case]) / r - 1 for s, r in zip(generations, references, strict=True)]
            headlines.append(
                f"After {label} the loop ran {statistics.median(gaps) * 100:+.2f}% [{min(gaps) * 100:+.2f}% to "
                f"{max(gaps) * 100:+.2f}%] against after a bare request (median of generations)."
            )
    return [
        "| the loop right after | "
        + " | ".join(f"generation {g + 1}: µs (vs after a bare request; halves)" for g in range(len(generations)))
        + " |",
        "|---|" + "---:|" * len(generations),
        *rows,
        "",
        *headlines,
    ]


def measure(framework: str, args: argparse.Namespace, ports: dict[str, int]) -> list[str]:
    from bench_paired import pinned
    from bench_routes import LOOP_KINDS, child_env

    env = child_env(args.config, ports, SRC)
    generations = []
    for generation in range(args.generations):
        options = {"framework": framework, "loop": args.loop, "loop-kind": args.loop_kind, "turns": args.turns}
        options["seed"] = args.seed + generation
        cmd = pinned([str(Path(__file__)), "--child", *(f"--{k}={v}" for k, v in options.items())], args.cpu)
        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, check=True, timeout=1800)
        generations.append(json.loads(done.stdout.splitlines()[-1]))
    return [
        f"After-effect, {framework}, {args.config}: {LOOP_KINDS[args.loop_kind].format(args.loop)} timed "
        f"(request-thread CPU) right after each case, {args.turns} turns per generation",
        "",
        *summarize(generations),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--framework", default="fastapi", help=argparse.SUPPRESS)
    parser.add_argument("--frameworks", nargs="+", default=["fastapi"])
    parser.add_argument("--generations", type=int, default=3, help="fresh child processes per framework")
    parser.add_argument("--turns", type=int, default=400)
    parser.add_argument("--loop", type=int, default=24000, help="iterations of the timed loop (~1 ms)")
    parser.add_argument("--config", default="obskit_full", choices=["obskit_full", "obskit_metrics"])
    from bench_paired import common_options, report
    from bench_routes import loop_kind_option

    loop_kind_option(parser)
    common_options(parser)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    return report(args, args.frameworks, measure)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
