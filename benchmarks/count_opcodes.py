"""Bytecodes executed per request by obskit (and the OpenTelemetry API/SDK), function by function: a cost map that
does not move with the machine's noise.

Run: ``benchmarks/.venv/bin/python benchmarks/count_opcodes.py --framework fastapi --config obskit_full``
(``--lines PATTERN`` for a per-line count of the functions whose ``file:name`` contains PATTERN).

The benchmark app is driven in-process as in ``profile_obskit.py`` (a WSGI call for Flask, an ASGI call for
FastAPI; obskit exporting over OTLP/gRPC to a receiver in another process), warmed up, then a few requests run
under ``sys.settrace`` with opcode events on the request thread. The counts are exact and repeatable, so a change
of a few bytecodes per request is visible where the timings of these shared 2-core machines move by ±10 µs.
They are not times: a bytecode costs ~5-10 ns in a loop and more in a real request's flow, and C calls (clocks,
locks, allocations) count as one bytecode however long they take. Use them to find and check work removed from
the hot path; measure what it buys with ``bench_paired.py`` and ``bench_http.py``.
"""

from __future__ import annotations

import argparse
import collections
import linecache
import os
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_http  # noqa: E402
import profile_obskit  # noqa: E402

_OURS = ("obskit", "opentelemetry")


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/src/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def count(run: Any, requests: int, lines: str | None) -> tuple[collections.Counter[Any], collections.Counter[Any]]:
    """(opcodes, calls) per function key, or opcodes per (file, line) of the functions matching ``lines``."""
    opcodes: collections.Counter[Any] = collections.Counter()
    calls: collections.Counter[Any] = collections.Counter()
    main = threading.get_ident()

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if threading.get_ident() != main:
            return None
        code = frame.f_code
        key = (_short(code.co_filename), code.co_name)
        if lines is not None and lines not in f"{code.co_filename}:{code.co_name}":
            return None
        calls[key] += 1
        frame.f_trace_opcodes = True

        def local(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                opcodes[key if lines is None else (code.co_filename, frame.f_lineno or 0)] += 1
            return local

        return local

    sys.settrace(tracer)
    try:
        run(requests)
    finally:
        sys.settrace(None)
    return opcodes, calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", default="fastapi", choices=["flask", "fastapi"])
    parser.add_argument("--config", default="obskit_full", help="one of profile_obskit.CONFIGS")
    parser.add_argument("--requests", type=int, default=20, help="traced requests (the counts are per request)")
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--lines", default=None, help="count per line in the functions whose file:name holds this")
    args = parser.parse_args(argv)
    if args.config not in profile_obskit.CONFIGS:
        parser.error(f"--config: expected one of {', '.join(profile_obskit.CONFIGS)}")
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "obskit-count-opcodes"
    log_dir.mkdir(parents=True, exist_ok=True)
    with bench_http.receiver(None, log_dir) as (_rx, ports):
        os.environ.update(profile_obskit.config_env(args.config, ports))
        run = profile_obskit.prepare(argparse.Namespace(framework=args.framework, config=args.config))
        run(args.warmup)
        opcodes, calls = count(run, args.requests, args.lines)
        n = args.requests
        if args.lines is not None:
            for (filename, line), ops in sorted(opcodes.items()):
                print(f"{ops / n:7.1f}  {_short(filename)}:{line}  {linecache.getline(filename, line).rstrip()}")
            return 0
        ours = {key: ops for key, ops in opcodes.items() if key[0].startswith(_OURS)}
        ours_calls = sum(c for key, c in calls.items() if key[0].startswith(_OURS))
        print(
            f"{args.framework}/{args.config}, per request: {sum(opcodes.values()) / n:.0f} bytecodes, "
            f"{sum(ours.values()) / n:.0f} of them in obskit and OpenTelemetry; "
            f"{sum(calls.values()) / n:.0f} Python calls, {ours_calls / n:.0f} of them theirs"
        )
        print()
        print("| bytecodes/request | calls/request | function |")
        print("|---:|---:|---|")
        for key, ops in sorted(ours.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"| {ops / n:.1f} | {calls[key] / n:.1f} | `{key[0]}:{key[1]}` |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
