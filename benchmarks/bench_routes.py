"""Routes scaling in one process: obskit full's added CPU per request with 10 and with 1,000 routes.

    benchmarks/.venv/bin/python benchmarks/bench_routes.py [--frameworks fastapi flask] [--generations 5]
    # A/B of two obskit sources, in alternate generations of one run (the growth from 10 to 1,000 routes of each):
    benchmarks/.venv/bin/python benchmarks/bench_routes.py --frameworks fastapi --baseline-src /tmp/base/src

Issue 8's target: obskit full's overhead per request with 1,000 routes within 10% of its overhead with 10.

Why a tool of its own: everywhere else (bench_http.py, bench_paired.py) an overhead is the difference between
two processes, bare and instrumented. With 1,000 linearly matched FastAPI routes, walking them is ~900 µs of a
~1,050-µs request, and how fast one process walks them moves by a few % with its memory layout and hash seed:
±30 µs on an overhead of ~60. Session 12's six paired runs read +40 to +91 µs at 1,000 routes for the same code.

Here one child process holds the apps: bare and obskit-instrumented, each with 10 and with 1,000 routes. The
bare and the obskit FastAPI app of a route count share the very same filler route objects (Flask's rules are
bound to one app each, but werkzeug does not walk them linearly), so both walk the same memory, and the per-slice
difference between them is obskit's own work. The parent asks the child for slices; each slice serves every app
in a shuffled order, 30 requests each (a 1,000-route slice of 300 requests was long enough for the VM's noise
to hit one app of a pair and not the other), and each app's CPU time is the request thread's
(``time.thread_time``): the export threads serve every obskit app alike, with the same spans and points at
either route count, and their time is reported apart, for all apps together.

FastAPI also gets a control pair, ``@10+walk``: 10 routes, and the handler matches the request against the 998
filler routes itself before the first stage, as the router does with 1,000. The same work, with no routes. obskit
does the same work per request at any route count (count_opcodes.py: 3,009 bytecodes at 10 and at 1,000), yet
its overhead grows with the request's other CPU time, whatever that time is spent on (session 13: 3-4.5% of a
pure-Python loop's time, --loop). The cause is not attributed; session 14 ruled out cache eviction, and found a
related after-effect of a traced request (bench_aftereffect.py) whose removal left this growth as it was
(benchmarks/README.md, Recommendations 5). If obskit's overhead at 1,000 routes is no more than at ``@10+walk``,
what grows with the routes is that, not work that obskit does per route.
The handler's own work is timed too, in both control apps: the column "of which the handler's own work" is how
much slower the walk (or loop) itself ran inside the instrumented request (session 13: +0.6 to +7.8 µs for the
walk, +27 to +62 µs for a 2.1-ms loop). ``--loop-kind sha256`` makes the loop C code (SHA-256 digests, compute-bound,
as a model's inference in a native library is) instead of Python, and ``--interleave`` alternates the control
pair's requests one by one instead of 30 in a row per app, so that no instrumented request follows another
(session 15: most of the handler's slowdown is carried over from the previous traced request).

The work table (``--work N``, 20 by default; session 15) counts, in one more fresh child per kind, the bytecodes
each app executes per request on the request thread (count_opcodes.py's tracer over N requests after the
warm-up): what obskit, and with ``--stock`` stock OpenTelemetry, add over the bare app at each route count. It is
the per-route work itself, apart from how fast this machine runs it; it repeats to a few bytecodes (the export
queue's wake-up, once per 512 spans, falls into the counted window or not). ``tests/test_bench_routes.py`` runs it
for FastAPI and fails if obskit's work differs by more than 1% between 10 and 1,000 routes.

A generation is one fresh child (a fresh hash seed and layout). Its overhead at a route count is the median of
the per-slice differences; the verdict is on the median of the generations' ratios, with their range.

The bare apps run in a process where obskit.init() set the global providers, so FastAPI's own telemetry, which
would trace and meter through them, is switched off in the bare apps' configuration (in a bare server there are
no providers and it stays idle the same way).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

HERE = Path(__file__).resolve().parent
SRC = Path(os.environ.get("OBSKIT_SRC") or HERE.parent / "src")
APPS: Final = ("bare@10", "obskit@10", "bare@1000", "obskit@1000")
# FastAPI only: 10 routes, and the handler itself matches the request against the 998 filler routes, as the
# router does with 1,000, before the first stage. Same work at the same place in the request, no routes.
WALK_APPS: Final = ("bare@10+walk", "obskit@10+walk")
# --stock N: N more generations of bare and stock OpenTelemetry (contrib's instrumentor, SDK tracer and meter, spans
# to a null exporter) at both route counts, and on FastAPI with the control's walk (or --loop) in the handler, for
# comparison. Processes of their own: obskit's are measured as ever.
STOCK_APPS: Final = ("bare@10", "stock@10", "bare@1000", "stock@1000")
STOCK_WALK_APPS: Final = ("bare@10+walk", "stock@10+walk")  # FastAPI: stock OpenTelemetry's control pair
LOOP_KINDS: Final = {"python": "a {:,}-iteration Python loop", "sha256": "{:,} SHA-256 digests of 64 KB (C code)"}
TARGET: Final = 1.10  # issue 8: overhead at 1,000 routes within 10% of the overhead at 10


# Child: the request-thread CPU seconds the control apps' handlers spent in their own work (walk or loop), by
# app kind, since the last report: whether that work itself runs slower inside an instrumented request.
_WORK: dict[str, float] = {}


# --loop-kind sha256: each iteration a SHA-256 digest of this much data (64 KB: it stays in L2), compute-bound C
# code, as a model's inference in a native library is; ~38 µs an iteration on the benchmark machine.
SHA_BLOCK: Final = bytes(range(256)) * 256


def loop_kind_option(parser: argparse.ArgumentParser) -> None:
    """``--loop-kind``, for the tools that time a ``spinner`` (this one and bench_aftereffect.py)."""
    parser.add_argument(
        "--loop-kind", default="python", choices=list(LOOP_KINDS), help="what the loop's iterations do (sha256: C code)"
    )


def spinner(loop: int, kind: str = "python") -> Callable[[], None]:
    """A loop of ``loop`` iterations as a function of no arguments: pure Python (integer arithmetic only), or with
    ``kind`` "sha256" one SHA-256 digest of ``SHA_BLOCK`` per iteration (C code)."""
    if kind == "sha256":
        sha256 = hashlib.sha256

        def digests() -> None:
            for _ in range(loop):
                sha256(SHA_BLOCK).digest()

        return digests

    def spin() -> None:
        total = 0
        for i in range(loop):
            total += i * i

    return spin


def _walking(fillers: list[Any], stage: Any, loop: int, kind: str, loop_kind: str = "python") -> Any:
    """``stage`` preceded by the router's walk over ``fillers`` (none of which matches a POST to /predict), or by
    a pure-Python loop of ``loop`` iterations instead when ``loop`` is not 0 (``--loop``); the work is timed."""
    scope = {"type": "http", "path": "/predict", "root_path": "", "method": "POST"}
    clock = time.thread_time

    def walk() -> None:
        for route in fillers:
            route.matches(scope)

    work = spinner(loop, loop_kind) if loop else walk

    def work_then(*args: Any) -> Any:
        t0 = clock()
        work()
        _WORK[kind] = _WORK.get(kind, 0.0) + clock() - t0
        return stage(*args)

    return work_then


def app_driver(framework: str, instrumentation: str, model: Any, routes: int, fillers: Sequence[Any] = ()) -> Any:
    """Child: a driver ``run(n)`` of the benchmark app over ``model`` with ``routes`` routes (FastAPI's fillers
    taken from ``fillers``), instrumented by "obskit", "stock" (contrib's instrumentor on SDK providers) or not at
    all ("bare"). Needs ``_benchapp`` imported first (obskit.init() with auto-instrument off)."""
    import profile_obskit

    import obskit

    if framework == "fastapi":
        import app_fastapi

        app: Any = app_fastapi.create_app(model, fillers[: routes - 2])
        if instrumentation != "obskit":  # FastAPI's own telemetry would trace through obskit's global providers
            app._telemetry.update(tracing=False, metrics=False, logs=False)
        driver = profile_obskit._fastapi_driver
    else:
        import app_flask

        app = app_flask.create_app(model, routes - 2)
        driver = profile_obskit._flask_driver
    if instrumentation == "obskit":
        obskit.instrument_app(app)
    elif instrumentation == "stock":
        profile_obskit._instrument_contrib(framework, app, "contrib_both")  # SDK tracer and meter, null exporter
    return driver(app)


def _build(framework: str, loop: int, stock_only: bool = False, loop_kind: str = "python") -> dict[str, Any]:
    """Child: the apps, by name, as drivers ``run(n)``."""
    sys.path[:0] = [str(HERE), str(SRC)]
    import _benchapp as bench  # VARIANT=obskit_*: obskit.init(), apps instrumented below (auto-instrument off)

    plain = (bench.featurize, bench.infer, bench.to_labels)
    models = {"obskit": bench.decorated_model(), "bare": plain, "stock": plain}
    apps, walk_apps = (STOCK_APPS, STOCK_WALK_APPS) if stock_only else (APPS, WALK_APPS)
    fillers: list[Any] = []
    if framework == "fastapi":
        import app_fastapi

        fillers = app_fastapi.filler_routes(998)
    else:
        walk_apps = ()  # werkzeug does not walk its rules: no control
    drivers: dict[str, Any] = {}
    for name in (*apps, *walk_apps):
        kind, routes = name.split("@")
        model = models[kind]
        if routes.endswith("+walk"):
            routes = routes.removesuffix("+walk")
            model = (_walking(fillers, model[0], loop, kind, loop_kind), *model[1:])
        drivers[name] = app_driver(framework, kind, model, int(routes), fillers)
    return drivers


def _serve(args: argparse.Namespace) -> int:
    """Child: build, warm up, then serve one slice of every app per line of stdin, with one JSON report each."""
    drivers = _build(args.framework, args.loop, args.stock_only, args.loop_kind)
    for run in drivers.values():
        run(args.warmup)
    if args.count:
        _count(drivers, args.count)
    else:
        _answer_slices(drivers, args)
    import obskit

    obskit.shutdown(timeout=5)
    return 0


def _answer_slices(drivers: dict[str, Any], args: argparse.Namespace) -> None:
    """Child: "ready", then one slice of every app per line ``n`` of stdin (up to a line 0), one JSON report each."""
    rng = random.Random(args.seed)
    print("ready", flush=True)
    for line in sys.stdin:
        n = int(line)
        if n <= 0:
            break
        order = list(drivers)
        rng.shuffle(order)
        process0 = time.process_time()
        spent = _slice(drivers, order, n, args.interleave)
        report = {name: seconds / n * 1e6 for name, seconds in spent.items()}
        # The rest of the process's CPU over the slice: background threads (export, metric reader).
        report["background"] = (time.process_time() - process0 - sum(spent.values())) / n * 1e6
        for kind in ("bare", "obskit", "stock"):
            if kind in _WORK:
                report[f"work@{kind}"] = _WORK.pop(kind) / n * 1e6
        print(json.dumps(report), flush=True)


def _slice(drivers: dict[str, Any], order: Sequence[str], n: int, interleave: bool = False) -> dict[str, float]:
    """Child: one slice, the request-thread seconds each app spent on ``n`` requests, in ``order``: each app's
    requests in a row, except the control pair's with ``interleave``, which alternate one by one (bare, obskit,
    bare, ... in the order they first appear), so that no instrumented request follows another."""
    clock = time.thread_time
    spent: dict[str, float] = {}
    pair = [name for name in order if name.endswith("@10+walk")] if interleave else []
    for name in order:
        if name in spent:
            continue
        if name not in pair:
            t0 = clock()
            drivers[name](n)
            spent[name] = clock() - t0
            continue
        spent.update(dict.fromkeys(pair, 0.0))
        for _ in range(n):
            for app in pair:
                t0 = clock()
                drivers[app](1)
                spent[app] += clock() - t0
    return spent


def _count(drivers: dict[str, Any], requests: int) -> None:
    """Child (--count): one JSON report of the bytecodes each app executes per request, all code on the request
    thread (the framework's, the app's, obskit's, OpenTelemetry's), counted over ``requests`` requests."""
    from count_opcodes import count

    report = {name: sum(count(run, requests, None)[0].values()) / requests for name, run in drivers.items()}
    print(json.dumps(report), flush=True)


def child_env(config: str, ports: dict[str, int], src: Path) -> dict[str, str]:
    """The environment of a child holding bare and instrumented apps side by side, with obskit from ``src``."""
    from profile_obskit import config_env

    env = config_env(config, ports, src)
    env["OBSKIT_AUTO_INSTRUMENT"] = "false"  # the bare apps stay bare; the others are instrumented by name
    env.pop("PYTHONHASHSEED", None)  # a fresh hash seed per child
    return env


def _child_cmd(framework: str, args: argparse.Namespace, seed: int, stock_only: bool) -> list[str]:
    cmd = [str(Path(__file__)), "--serve", "--framework", framework, "--warmup", str(args.warmup), "--seed", str(seed)]
    cmd += ["--loop", str(args.loop), "--loop-kind", args.loop_kind, *(["--interleave"] if args.interleave else [])]
    return [*cmd, *(["--stock-only"] if stock_only else [])]


def _generation(
    framework: str, args: argparse.Namespace, ports: dict[str, int], seed: int, src: Path, stock_only: bool = False
) -> dict[str, list[float]]:
    """One fresh child with obskit from ``src``: per-slice request-thread µs per request of every app, and the
    background's."""
    from bench_paired import SliceChild

    env = child_env(args.config, ports, src)
    child = SliceChild("bench_routes child", _child_cmd(framework, args, seed, stock_only), env, args.cpu)
    samples: dict[str, list[float]] = {}
    try:
        for _ in range(args.slices):
            for name, value in child.slice(args.requests).items():
                samples.setdefault(name, []).append(value)
    finally:
        code = child.close(timeout=60)
    if code != 0:
        raise RuntimeError(f"bench_routes child failed (code {code})")
    return samples


def added(samples: dict[str, list[float]], app: str, kind: str = "obskit") -> float:
    """A generation's added request-thread µs per request of ``kind``'s ``app``: median of paired slices to bare's."""
    pairs = zip(samples[f"{kind}@{app}"], samples[f"bare@{app}"], strict=True)
    return statistics.median(o - b for o, b in pairs)


def slower(samples: dict[str, list[float]], kind: str = "obskit") -> float:
    """A generation's µs by which the control's handler work ran slower inside ``kind``'s request than inside the
    bare one: median of paired slices."""
    pairs = zip(samples[f"work@{kind}"], samples["work@bare"], strict=True)
    return statistics.median(k - b for k, b in pairs)


def measure(framework: str, args: argparse.Namespace, ports: dict[str, int]) -> list[str]:
    # A/B (--baseline-src): the generations alternate between this tree's obskit and the baseline's, so that
    # both meet the same minutes of the machine.
    sources = [("", SRC)] if args.baseline_src is None else [("head", SRC), ("base", args.baseline_src.resolve())]
    rows: list[str] = []
    overheads: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in sources}
    ratios: dict[str, list[float]] = {label: [] for label, _ in sources}
    walk_ratios: list[float] = []
    for generation in range(args.generations * len(sources)):
        label, src = sources[generation % len(sources)]
        samples = _generation(framework, args, ports, args.seed + generation, src)
        at10, at1000 = added(samples, "10"), added(samples, "1000")
        overheads[label].append((at10, at1000))
        ratios[label].append(at1000 / at10)
        medians = {name: statistics.median(values) for name, values in samples.items()}
        walk = "- | - | - | -"
        if "obskit@10+walk" in samples:
            walked = added(samples, "10+walk")
            if label != "base":
                walk_ratios.append(at1000 / walked)
            walk = f"{medians['bare@10+walk']:.1f} | {walked:+.1f} | {slower(samples):+.1f} | {at1000 / walked:.2f}x"
        rows.append(
            f"| {generation + 1}{f' {label}' if label else ''} | {medians['bare@10']:.1f} | {at10:+.1f} | "
            f"{medians['bare@1000']:.1f} | {at1000:+.1f} | **{at1000 / at10:.2f}x** | {walk} | "
            f"{medians['background']:.1f} |"
        )
        print(rows[-1], file=sys.stderr, flush=True)

    def summary(values: list[float]) -> str:
        return f"{statistics.median(values):.2f}x [{min(values):.2f}x to {max(values):.2f}x]"

    head = sources[0][0]
    ratio = statistics.median(ratios[head])
    verdict = "met" if ratio <= TARGET else "**not met**"
    walk_note = " (the same route objects); +walk: 10 routes, " + (
        f"the handler runs {LOOP_KINDS[args.loop_kind].format(args.loop)} (--loop) instead of the walk"
        if args.loop
        else "the handler walks the 998 filler routes"
    )
    lines = [
        f"Routes scaling, {framework}, {args.config}: {args.generations} generations (fresh processes) x "
        f"{args.slices} slices x {args.requests} requests per app; request-thread CPU µs per request; obskit's "
        "added µs is the median of per-slice differences to the bare app with the same routes"
        + (walk_note if walk_ratios else ""),
        "",
        "| generation | bare @10 | added @10 | bare @1,000 | added @1,000 | 1,000/10 | bare @10+walk | "
        "added @10+walk | of which the handler's own work | 1,000/(10+walk) | "
        "background CPU per turn ÷ requests per app, µs |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "| framework | overhead ratio 1,000/10 routes: median of generations [range] | target | verdict | "
        f"1,000 routes / 10 routes + {'the loop' if args.loop else 'the same walk'} in the handler |",
        "|---|---:|---|---|---:|",
        f"| {framework} | {summary(ratios[head])} | <= {TARGET:.2f}x | {verdict} | "
        f"{summary(walk_ratios) if walk_ratios else '-'} |",
    ]
    if args.baseline_src is not None:
        lines += ["", *ab_table(framework, overheads, ratios)]
    if args.stock:
        lines += ["", *stock_table(framework, args, ports)]
    if args.work:
        lines += ["", *work_table(framework, args, ports)]
    return lines


def _work(framework: str, args: argparse.Namespace, ports: dict[str, int], stock_only: bool) -> dict[str, float]:
    """One fresh child (--count): bytecodes per request of every app, repeatable to a few."""
    from bench_paired import pinned

    cmd = [*_child_cmd(framework, args, args.seed, stock_only), "--count", str(args.work)]
    env = child_env(args.config, ports, SRC)
    done = subprocess.run(pinned(cmd, args.cpu), env=env, cwd=HERE, stdout=subprocess.PIPE, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"bench_routes counting child failed (code {done.returncode})")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def work_table(framework: str, args: argparse.Namespace, ports: dict[str, int]) -> list[str]:
    """--work N: the bytecodes each instrumentation adds per request over bare at 10 and 1,000 routes (and, for
    FastAPI, at 10 routes with the walk in the handler): the work it does, which neither the machine's noise nor
    how fast the request's other code runs can move."""
    counts = [("obskit", _work(framework, args, ports, stock_only=False))]
    if args.stock:
        counts.append(("stock", _work(framework, args, ports, stock_only=True)))
    rows = []
    for kind, bytecodes in counts:
        at10, at1000 = (bytecodes[f"{kind}@{app}"] - bytecodes[f"bare@{app}"] for app in ("10", "1000"))
        walk = bytecodes.get(f"{kind}@10+walk")
        walked = "-" if walk is None else f"{walk - bytecodes['bare@10+walk']:+,.0f}"
        label = f"obskit ({args.config})" if kind == "obskit" else "stock OpenTelemetry"
        rows.append(
            f"| {label} | {bytecodes['bare@10']:,.0f} | {at10:+,.0f} | {bytecodes['bare@1000']:,.0f} | "
            f"{at1000:+,.0f} | **{at1000 / at10:.2f}x** | {walked} |"
        )
    return [
        f"Work per request, {framework}: bytecodes executed on the request thread (framework, app and "
        f"instrumentation; count_opcodes.py's tracer over {args.work} requests per app, after the warm-up), and "
        "what each instrumentation adds over the bare app with the same routes. Repeatable to a few bytecodes: "
        "this is the per-route work, apart from how fast the machine runs it",
        "",
        "| instrumentation | bare @10 | added @10 | bare @1,000 | added @1,000 | 1,000/10 | added @10+walk |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]


def stock_table(framework: str, args: argparse.Namespace, ports: dict[str, int]) -> list[str]:
    """--stock: stock OpenTelemetry's added µs at 10 and 1,000 routes (and with the control's walk or loop in the
    handler, for FastAPI), in generations of its own."""
    rows = []
    for generation in range(args.stock):
        samples = _generation(framework, args, ports, args.seed + 1000 + generation, SRC, stock_only=True)
        at10, at1000 = added(samples, "10", "stock"), added(samples, "1000", "stock")
        walk = "- | -"
        if "stock@10+walk" in samples:
            walk = f"{added(samples, '10+walk', 'stock'):+.1f} | {slower(samples, 'stock'):+.1f}"
        rows.append(f"| {generation + 1} | {at10:+.1f} | {at1000:+.1f} | {at1000 / at10:.2f}x | {walk} |")
    return [
        f"For comparison, stock OpenTelemetry, {framework} (--stock: contrib's instrumentor, SDK tracer and meter, "
        "spans to a null exporter; bare and stock apps in processes of their own): added request-thread µs per "
        "request over bare",
        "",
        "| generation | added @10 | added @1,000 | 1,000/10 | added @10+walk | of which the handler's own work |",
        "|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]


def ab_table(
    framework: str, overheads: dict[str, list[tuple[float, float]]], ratios: dict[str, list[float]]
) -> list[str]:
    """Head against base: medians over each one's generations of the added µs at 10 and at 1,000 routes."""

    def medians(label: str) -> tuple[float, float, float]:
        at10 = statistics.median(o[0] for o in overheads[label])
        at1000 = statistics.median(o[1] for o in overheads[label])
        return at10, at1000, statistics.median(ratios[label])

    head, base = medians("head"), medians("base")
    return [
        f"A/B, {framework}: medians over each source's generations (alternating in one run)",
        "",
        "| source | added @10 µs | added @1,000 µs | growth µs | ratio 1,000/10 |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {label} | {m[0]:+.1f} | {m[1]:+.1f} | {m[1] - m[0]:+.1f} | {m[2]:.2f}x |"
            for label, m in (("head", head), ("base", base))
        ),
        f"| head minus base | {head[0] - base[0]:+.1f} | {head[1] - base[1]:+.1f} | "
        f"{(head[1] - head[0]) - (base[1] - base[0]):+.1f} | |",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--framework", default="fastapi", help=argparse.SUPPRESS)
    parser.add_argument("--frameworks", nargs="+", default=["fastapi", "flask"])
    parser.add_argument("--generations", type=int, default=5, help="fresh child processes per framework")
    parser.add_argument("--slices", type=int, default=150)
    parser.add_argument("--requests", type=int, default=30, help="requests per app and slice")
    parser.add_argument("--warmup", type=int, default=1000, help="requests per app before the first slice")
    parser.add_argument(
        "--config", default="obskit_full", choices=["obskit_full", "obskit_metrics"], help="the obskit apps' mode"
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="A/B: also serve obskit from this src/ directory, in alternate generations (--generations each)",
    )
    parser.add_argument(
        "--loop", type=int, default=0, help="the control's handler runs a Python loop of this many iterations instead"
    )
    parser.add_argument(
        "--stock", type=int, default=0, help="generations of stock OpenTelemetry at both route counts, for comparison"
    )
    parser.add_argument(
        "--work", type=int, default=20, help="requests per app whose bytecodes are counted (0: no work table)"
    )
    loop_kind_option(parser)
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="the control pair's requests alternate one by one instead of in a row (no instrumented request follows "
        "another)",
    )
    parser.add_argument("--stock-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    from bench_paired import common_options, report

    common_options(parser)
    args = parser.parse_args(argv)
    if args.serve:
        return _serve(args)
    return report(args, args.frameworks, measure)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
