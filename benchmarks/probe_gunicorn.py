"""Where a variant's cost is inside a live gunicorn worker (Flask): bytecodes per request by package, thread CPU in
and between requests, garbage collections. Session 11 used it to show that metrics-only's HTTP cost is obskit's
own bytecodes (the framework's count is unchanged) at about twice their in-process price.

Run: ``benchmarks/.venv/bin/python benchmarks/probe_gunicorn.py --variants bare obskit_metrics --rounds 3``
(A/B: ``--variants bare obskit_metrics@base obskit_metrics --baseline-src /tmp/base/src``, with the baseline's
``src/`` copied out by ``git archive <commit> src/obskit | tar -C /tmp/base -xf -``.)

Each round serves every variant once (shuffled) as ``bench_http.py`` does (gunicorn sync, one worker pinned to
CPU 1, ``wrk -c8`` on CPU 0, the receiver beside it), with ``_probe_hooks.py`` as gunicorn's config. The bytecode
counts are exact and repeat from run to run; the CPU figures move with the machine like any timing here (compare
the paired per-round differences, printed last).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_http  # noqa: E402


def by_package(bytecodes: dict[str, float]) -> dict[str, float]:
    """Bytecodes per request by top-level package (or module) of the file that ran them."""
    out: dict[str, float] = {}
    for path, n in bytecodes.items():
        package = path.split("/", 1)[0].removesuffix(".py")
        out[package] = out.get(package, 0.0) + n
    return out


def median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(run[key] for run in runs))


def serve(variant: str, ports: dict[str, int], args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """One fresh server of ``variant`` under wrk for ``args.seconds``; what the hooks measured, and its req/s."""
    cfg = bench_http.Config("flask", variant, 10)
    port = bench_http.free_port()
    env = bench_http.server_env(cfg, ports, args.baseline_src)
    out = Path(tempfile.mkdtemp(prefix="obskit-probe-")) / "probe.json"
    env.update(PROBE_OUT=str(out), PROBE_WARMUP=str(args.warmup), PROBE_TRACED=str(args.traced))
    cmd = bench_http.server_command(cfg, port, "1")
    at = cmd.index("-w")
    cmd[at:at] = ["-c", str(HERE / "_probe_hooks.py")]
    log = log_dir / f"{variant}.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            cmd, env=env, cwd=str(HERE), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        bench_http.wait_ready(url, proc, log)
        result = bench_http.wrk(url, args.seconds, args, args.lua)
    finally:
        bench_http.stop(proc)
    measured: dict[str, Any] = json.loads(out.read_text())
    measured["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["bare", "obskit_metrics"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--warmup", type=int, default=300, help="requests before the traced ones")
    parser.add_argument("--traced", type=int, default=20, help="requests counted under sys.settrace")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="a src/ directory: variants named VARIANT@base are served from it (an A/B in the same rounds)",
    )
    args = parser.parse_args(argv)
    # What bench_http.wrk() reads from its own argument namespace.
    args.connections, args.threads, args.client_cpu = 8, 1, "0"
    log_dir = Path(tempfile.mkdtemp(prefix="obskit-probe-logs-"))
    args.lua = log_dir / "post.lua"
    args.lua.write_text(bench_http.LUA)
    rounds: list[dict[str, dict[str, Any]]] = []
    rng = random.Random(11)
    with bench_http.receiver("0", log_dir) as (_rx, ports):
        for r in range(args.rounds):
            order = list(args.variants)
            rng.shuffle(order)
            rounds.append({v: serve(v, ports, args, log_dir) for v in order})
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    base = args.variants[0]
    print("| variant | bytecodes/request (obskit + OpenTelemetry) | request CPU µs | between µs | req/s | GC/1,000 |")
    print("|---|---:|---:|---:|---:|---|")
    for v in args.variants:
        runs = [r[v] for r in rounds]
        codes = by_package(runs[-1]["bytecodes"])
        ours = codes.get("obskit", 0) + codes.get("opentelemetry", 0)
        gcs = "/".join(f"{statistics.median(x['gc_per_1000'][g] for x in runs):.1f}" for g in range(3))
        cells = [
            f"{sum(codes.values()):,.0f} ({ours:,.0f})",
            f"{median(runs, 'in_request_us'):.1f}",
            f"{median(runs, 'between_us'):.1f}",
            f"{median(runs, 'rps'):,.0f}",
            gcs,
        ]
        print(f"| {v} | " + " | ".join(cells) + " |")
    print()
    print(f"Paired per-round differences to {base}, median [min to max]:")
    for v in args.variants[1:]:
        parts = []
        for key in ("in_request_us", "between_us"):
            d = [r[v][key] - r[base][key] for r in rounds]
            parts.append(f"{key} {statistics.median(d):+.1f} [{min(d):+.1f} to {max(d):+.1f}]")
        mine, bare = by_package(rounds[-1][v]["bytecodes"]), by_package(rounds[-1][base]["bytecodes"])
        moved = {k: mine.get(k, 0) - bare.get(k, 0) for k in {*mine, *bare}}
        changed = ", ".join(
            f"{k} {n:+,.0f}" for k, n in sorted(moved.items(), key=lambda kv: -abs(kv[1])) if abs(n) >= 1
        )
        print(f"- {v}: {', '.join(parts)}; bytecodes per request by package: {changed or 'no change'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
