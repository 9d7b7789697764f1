"""Paired in-process overhead: a few µs per request told apart on a noisy machine.

    benchmarks/.venv/bin/python benchmarks/bench_paired.py --framework flask --configs bare obskit_metrics
    # A/B of two obskit sources (same configuration): NAME@SRC serves NAME from another src/ directory
    # (NAME may be one with an "@" of its own: bare@1000 obskit_full@1000 obskit_full@1000@/tmp/base/src)
    benchmarks/.venv/bin/python benchmarks/bench_paired.py --configs bare obskit_full obskit_full@/tmp/base/src

Each configuration (profile_obskit.py's CONFIGS) runs in one long-lived child process, all pinned to the same
CPU, set up once and warmed up. The parent then asks them in turn, in a shuffled order per slice, to serve a
slice of requests (the app called directly, as in profile_obskit.py), and each reports its process CPU time
since its previous report, so background threads' work between slices is charged to the process that did it.
A noisy minute moves every configuration's slices alike, so the *per-slice difference* to the first
configuration is steady where fresh-process figures (profile_obskit.py, bench_http.py) move by 10-20%: the
median of those differences is the added CPU µs per request, with its interquartile range.

``BENCH_GC=off`` disables the garbage collector in every child after its warm-up (an experiment: the collector's
share of a difference).

Not a substitute for bench_http.py (no HTTP server, no socket): it is the tool to decide whether a change of a
few µs per request is real.
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

HERE = Path(__file__).resolve().parent
SRC = Path(os.environ.get("OBSKIT_SRC") or HERE.parent / "src")


def _serve(args: argparse.Namespace) -> int:
    """Child: set up, warm up, then serve ``<n>`` lines from stdin with one JSON report each."""
    import profile_obskit

    run = profile_obskit.prepare(args)
    run(args.warmup)
    if os.environ.get("BENCH_GC") == "off":  # an experiment's switch: the collector's share of a difference
        import gc

        gc.disable()
    last = time.process_time()
    print("ready", flush=True)
    for line in sys.stdin:
        n = int(line)
        if n <= 0:
            break
        thread0 = time.thread_time()
        run(n)
        process, thread1 = time.process_time(), time.thread_time()
        print(json.dumps({"cpu_us": (process - last) / n * 1e6, "thread_us": (thread1 - thread0) / n * 1e6}))
        sys.stdout.flush()
        last = process
    try:
        import obskit

        obskit.shutdown(timeout=5)
    except Exception:
        pass
    return 0


def pinned(cmd: list[str], cpu: str) -> list[str]:
    """``cmd`` (a script and its arguments) run by this Python, pinned to ``cpu`` with taskset when given."""
    return [*(["taskset", "-c", cpu] if cpu else []), sys.executable, *cmd]


class SliceChild:
    """A long-lived child process that prints "ready", then answers each line ``n`` of its stdin with one JSON
    report (a slice of ``n`` requests), and stops at a line ``0``. Pinned to ``cpu`` when given."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], cpu: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            pinned(cmd, cpu), env=env, cwd=HERE, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self._expect_ready()

    def _expect_ready(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == "ready":
                return
        raise RuntimeError(f"{self.name}: the child exited (code {self.proc.wait()}) before it was ready")

    def slice(self, n: int) -> dict[str, float]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: the child exited (code {self.proc.wait()})")
        return dict(json.loads(line))

    def close(self, timeout: float = 30) -> int:
        """Ask the child to stop (killing it after ``timeout`` seconds); its exit code."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write("0\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=timeout)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Child(SliceChild):
    """One configuration (``NAME`` or ``NAME@SRC``) served by ``_serve``."""

    def __init__(self, spec: str, framework: str, args: argparse.Namespace, ports: dict[str, int]) -> None:
        from profile_obskit import CONFIGS, config_env

        # NAME@SRC, where NAME may hold an "@" itself (bare@1000): the whole spec first, then up to the last "@".
        config, src = (spec, "") if spec in CONFIGS or "@" not in spec else spec.rsplit("@", 1)
        if config not in CONFIGS:
            raise SystemExit(f"{config!r}: expected one of {', '.join(CONFIGS)}")
        env = config_env(config, ports, Path(src).resolve() if src else SRC)
        cmd = [
            str(Path(__file__)),
            "--serve",
            "--framework",
            framework,
            "--config",
            config,
            "--warmup",
            str(args.warmup),
        ]
        super().__init__(spec, cmd, env, args.cpu)


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4)
    return q[0], statistics.median(values), q[2]


def measure(framework: str, args: argparse.Namespace, ports: dict[str, int]) -> list[str]:
    children = [Child(spec, framework, args, ports) for spec in args.configs]
    rng = random.Random(args.seed)
    cpu: dict[str, list[float]] = {c.name: [] for c in children}
    thread: dict[str, list[float]] = {c.name: [] for c in children}
    try:
        for _ in range(args.slices):
            order = children[:]
            rng.shuffle(order)
            for child in order:
                report = child.slice(args.requests)
                cpu[child.name].append(report["cpu_us"])
                thread[child.name].append(report["thread_us"])
    finally:
        for child in children:
            child.close()
    base = args.configs[0]
    lines = [
        f"{framework}: {args.slices} slices x {args.requests} requests per configuration, CPU µs per request "
        f"(process: request thread + background), differences paired per slice to {base}",
        "",
        f"| configuration | median CPU µs/req | added over {base}: median [IQR] | request thread alone: added |",
        "|---|---:|---:|---:|",
    ]

    def added(spec: str, ref: str, samples: dict[str, list[float]]) -> str:
        lo, mid, hi = _quartiles([a - b for a, b in zip(samples[spec], samples[ref], strict=True)])
        return f"{mid:+.1f} [{lo:+.1f} to {hi:+.1f}]"

    for spec in args.configs:
        row = ["-", "-"] if spec == base else [added(spec, base, cpu), added(spec, base, thread)]
        lines.append(f"| {spec} | {statistics.median(cpu[spec]):.1f} | {row[0]} | {row[1]} |")
    # Later configurations against the second as well (an A/B of two sources, or two settings of obskit).
    for spec in args.configs[2:]:
        ref = args.configs[1]
        lines.append(f"| {spec} minus {ref} | | {added(spec, ref, cpu)} | {added(spec, ref, thread)} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--framework", default="flask")
    parser.add_argument("--config", default="bare", help=argparse.SUPPRESS)
    parser.add_argument("--frameworks", nargs="+", default=None, help="default: --framework")
    parser.add_argument("--configs", nargs="+", default=["bare", "obskit_metrics", "obskit_full"])
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--requests", type=int, default=500, help="requests per slice")
    parser.add_argument("--warmup", type=int, default=2000)
    common_options(parser)
    args = parser.parse_args(argv)
    if args.serve:
        return _serve(args)
    return report(args, args.frameworks or [args.framework], measure)


def common_options(parser: argparse.ArgumentParser) -> None:
    """The options every in-process benchmark takes: the children's CPU, the seed and the output file."""
    parser.add_argument("--cpu", default="1" if (os.cpu_count() or 1) >= 2 else "", help="CPU of the children")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="also write the tables here (markdown)")


# measure(framework, args, ports): one framework's tables (markdown lines).
Measure = Callable[[str, argparse.Namespace, dict[str, int]], list[str]]


def report(args: argparse.Namespace, frameworks: list[str], measure: Measure) -> int:
    """Run ``measure(framework, args, ports)`` for each framework beside a receiver; print and write the tables."""
    from bench_http import receiver

    log_dir = args.out.parent if args.out else Path(os.environ.get("TMPDIR", "/tmp"))
    log_dir.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    # The receiver on the other CPU: it stands in for a collector elsewhere.
    other = None if not args.cpu else ("0" if args.cpu != "0" else "1")
    with receiver(other, log_dir) as (_rx, ports):
        for framework in frameworks:
            lines += [*measure(framework, args, ports), ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
