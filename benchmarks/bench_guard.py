"""Cost of the cardinality guard on the recording path: ``python benchmarks/bench_guard.py [--rounds 7]``.

An SDK histogram's ``.record()`` with four attributes, measured

- unguarded: the SDK instrument itself;
- guarded, seen values: the same instrument behind ``GuardedMeterProvider``, values already admitted;
- guarded, overflowing: every value new and past the limit (an attack), recorded as ``_OTHER``;
- ``obskit.metrics`` histogram, seen values: the public helper (generation check + guard);
- ``LabelGuard.filter`` alone, seen values.

Variants run interleaved, round after round, so drift (CPU frequency, other load) hits them all alike; the
table gives the median and the best round in ns per record. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from obskit import _guard, metrics
from obskit._guard import GuardedMeterProvider, LabelGuard

ATTRS = ("http.request.method", "http.route", "http.response.status_code", "model.name")


def seen_attributes(n: int) -> list[dict[str, Any]]:
    """``n`` attribute dicts over 20 routes x 3 methods x 3 statuses: all within the limit of 100."""
    return [
        {
            "http.request.method": ("GET", "POST", "PUT")[i % 3],
            "http.route": f"/v1/route{i % 20}",
            "http.response.status_code": (200, 404, 500)[i % 3],
            "model.name": "fraud-xgb",
        }
        for i in range(n)
    ]


def attack_attributes(n: int) -> list[dict[str, Any]]:
    """``n`` attribute dicts whose route is always new: past the limit, every one becomes _OTHER."""
    return [
        {
            "http.request.method": "GET",
            "http.route": f"/users/{i:08d}/profile",
            "http.response.status_code": 200,
            "model.name": "fraud-xgb",
        }
        for i in range(n)
    ]


def timed(record: Callable[..., None], batch: list[dict[str, Any]]) -> float:
    """Seconds per record over one pass of ``batch`` (timeit-style: the loop overhead is included alike)."""
    start = time.perf_counter()
    for attributes in batch:
        record(0.042, attributes)
    return (time.perf_counter() - start) / len(batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (>= 5)")
    parser.add_argument("--number", type=int, default=20_000, help="records per variant per round")
    args = parser.parse_args(argv)
    rounds = max(5, args.rounds)

    reader = InMemoryMetricReader()
    sdk = MeterProvider(metric_readers=[reader])
    guard = LabelGuard(max_values=100)
    guarded = GuardedMeterProvider(sdk, guard)
    _guard.install(guarded)

    raw = sdk.get_meter("bench").create_histogram("bench.raw", unit="s")
    safe = guarded.get_meter("bench").create_histogram("bench.guarded", unit="s")
    attacked = guarded.get_meter("bench").create_histogram("bench.attacked", unit="s")
    public = metrics.histogram("bench.public", unit="s", attributes=ATTRS)
    state = guard.instrument("bench.filter")

    def filter_only(amount: float, attributes: Mapping[str, Any]) -> None:
        state.filter(attributes)

    seen = seen_attributes(args.number)
    attack = attack_attributes(args.number)
    variants: dict[str, tuple[Callable[..., None], list[dict[str, Any]]]] = {
        "SDK histogram, unguarded": (raw.record, seen),
        "guarded, seen values": (safe.record, seen),
        "guarded, overflowing values": (attacked.record, attack),
        "obskit.metrics histogram, seen values": (public.record, seen),
        "LabelGuard.filter alone, seen values": (filter_only, seen),
    }
    # Warm-up: admit the seen values, fill the attacked instrument's limit, create the SDK series.
    for record, batch in variants.values():
        timed(record, batch[:2_000])

    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (record, batch) in variants.items():
            results[name].append(timed(record, batch) * 1e9)

    base = statistics.median(results["SDK histogram, unguarded"])
    print(f"Python {sys.version.split()[0]}, {rounds} interleaved rounds x {args.number} records, 4 attributes")
    print(f"{'variant':<40} {'median ns':>10} {'best ns':>9} {'vs unguarded':>13}")
    for name, samples in results.items():
        median = statistics.median(samples)
        print(f"{name:<40} {median:>10.0f} {min(samples):>9.0f} {median / base:>12.2f}x")
    print(f"overflow counted: {guard.overflow_counts()}")
    _guard.install(None)
    sdk.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
