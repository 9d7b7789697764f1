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
        # The handler's walk itself: 3 µs slower in the obskit app (the median of the paired turns).
        samples["work@bare"] = [800.0, 810.0, 805.0]
        samples["work@obskit"] = [803.0, 813.0, 818.0]
    return samples


def _measure(
    monkeypatch: pytest.MonkeyPatch,
    generations: list[dict[str, list[float]]],
    framework: str,
    baseline: Path | None = None,
    stock: int = 0,
    loop: int = 0,
    loop_kind: str = "python",
) -> str:
    queue = list(generations)
    served: list[Path] = []

    def fake_generation(*args: Any, stock_only: bool = False) -> dict[str, list[float]]:
        served.append(args[-1])
        assert stock_only == ("stock@10" in queue[0])  # stock OpenTelemetry only in generations of its own
        return queue.pop(0)

    monkeypatch.setattr(bench_routes, "_generation", fake_generation)
    count = (len(generations) - stock) // (2 if baseline else 1)
    args = argparse.Namespace(
        generations=count,
        slices=3,
        requests=30,
        seed=1,
        loop=loop,
        loop_kind=loop_kind,
        config="obskit_full",
        baseline_src=baseline,
        stock=stock,
        work=0,
    )
    text = "\n".join(bench_routes.measure(framework, args, {}))
    if baseline is not None:  # head and base alternate
        assert served[: 2 * count] == [bench_routes.SRC, baseline.resolve()] * count
    return text


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
    assert "| 2 | 80.0 | +50.0 | 1050.0 | +66.0 | **1.32x** | 905.0 | +55.0 | +3.0 | 1.20x | 30.0 |" in text
    assert text.splitlines()[-1].endswith("| 1.10x [1.00x to 1.20x] |")


def test_ab_alternates_the_sources_and_compares_their_medians(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Head grows +10 µs from 10 to 1,000 routes, base +20: head minus base is -10 µs of growth."""
    head, base = _samples(50, 60, walk=60), _samples(52, 72, walk=36)
    generations = [head, base, head, base]
    text = _measure(monkeypatch, generations, "fastapi", baseline=tmp_path)
    assert "| head | +50.0 | +60.0 | +10.0 | 1.20x |" in text
    assert "| base | +52.0 | +72.0 | +20.0 | 1.38x |" in text
    assert "| head minus base | -2.0 | -12.0 | -10.0 | |" in text
    # The verdict and the control are head's alone.
    verdict = "| fastapi | 1.20x [1.20x to 1.20x] | <= 1.10x | **not met** | 1.00x [1.00x to 1.00x] |"
    assert verdict in text.splitlines()


def test_stock_opentelemetry_is_reported_apart_and_not_judged(monkeypatch: pytest.MonkeyPatch) -> None:
    """--stock 1: one more generation, bare and stock apps only; obskit's verdict is unchanged by it."""
    stock = {
        "bare@10": [80.0, 81.0, 79.0],
        "stock@10": [380.0, 381.0, 379.0],  # +300 over bare
        "bare@1000": [1000.0, 1100.0, 1050.0],
        "stock@1000": [4300.0, 4400.0, 4350.0],  # +3,300 over bare
        "background": [30.0, 31.0, 29.0],
    }
    text = _measure(monkeypatch, [_samples(50, 52.5), stock], "flask", stock=1)
    assert "| flask | 1.05x [1.05x to 1.05x] | <= 1.10x | met | - |" in text
    assert text.splitlines()[-1] == "| 1 | +300.0 | +3300.0 | 11.00x | - | - |"


def test_stock_opentelemetry_gets_the_control_pair_on_fastapi(monkeypatch: pytest.MonkeyPatch) -> None:
    """On FastAPI the stock generations hold the control pair too: stock's overhead with the walk (or loop) in the
    handler, and how much slower the handler's own work ran inside the stock request."""
    stock = {
        "bare@10": [80.0, 81.0, 79.0],
        "stock@10": [380.0, 381.0, 379.0],
        "bare@1000": [1000.0, 1100.0, 1050.0],
        "stock@1000": [4300.0, 4400.0, 4350.0],
        "bare@10+walk": [900.0, 910.0, 905.0],
        "stock@10+walk": [1250.0, 1260.0, 1255.0],  # +350 over bare
        "work@bare": [800.0, 810.0, 805.0],
        "work@stock": [820.0, 830.0, 900.0],  # +20 (the median of the paired turns)
        "background": [30.0, 31.0, 29.0],
    }
    text = _measure(monkeypatch, [_samples(50, 52.5, walk=50), stock], "fastapi", stock=1)
    assert text.splitlines()[-1] == "| 1 | +300.0 | +3300.0 | 11.00x | +350.0 | +20.0 |"


def test_work_is_what_each_instrumentation_adds_over_bare_by_route_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """--work: bytecodes per request from a counting child per kind; stock OpenTelemetry's only with --stock."""
    obskit = {"bare@10": 5000.0, "obskit@10": 8000.0, "bare@1000": 100000.0, "obskit@1000": 103000.0}
    obskit |= {"bare@10+walk": 90000.0, "obskit@10+walk": 93030.0}
    stock = {"bare@10": 5000.0, "stock@10": 19000.0, "bare@1000": 100000.0, "stock@1000": 296000.0}
    asked: list[bool] = []

    def fake_work(
        framework: str, args: argparse.Namespace, ports: dict[str, int], stock_only: bool
    ) -> dict[str, float]:
        asked.append(stock_only)
        return stock if stock_only else obskit

    monkeypatch.setattr(bench_routes, "_work", fake_work)
    args = argparse.Namespace(config="obskit_full", stock=0, work=20)
    rows = bench_routes.work_table("fastapi", args, {})
    assert asked == [False]
    assert rows[-1] == "| obskit (obskit_full) | 5,000 | +3,000 | 100,000 | +3,000 | **1.00x** | +3,030 |"
    args.stock = 2
    rows = bench_routes.work_table("fastapi", args, {})
    assert asked == [False, False, True]
    assert rows[-1] == "| stock OpenTelemetry | 5,000 | +14,000 | 100,000 | +196,000 | **14.00x** | - |"


def test_obskit_does_the_same_work_at_10_and_1000_routes(tmp_path: Path) -> None:
    """A real counting child (the benchmark's FastAPI apps, obskit exporting to a real receiver): obskit adds the
    same bytecodes per request whatever the number of routes the router walks."""
    import bench_http

    with bench_http.receiver(None, tmp_path) as (_rx, ports):
        args = argparse.Namespace(
            config="obskit_full",
            stock=0,
            work=20,
            warmup=300,
            seed=1,
            loop=0,
            loop_kind="python",
            interleave=False,
            cpu="",
        )
        counts = bench_routes._work("fastapi", args, ports, stock_only=False)
    assert counts["bare@1000"] > 10 * counts["bare@10"]  # the router really walks the 998 filler routes
    at10 = counts["obskit@10"] - counts["bare@10"]
    at1000 = counts["obskit@1000"] - counts["bare@1000"]
    walked = counts["obskit@10+walk"] - counts["bare@10+walk"]
    assert at10 > 1000  # obskit did trace and meter the requests
    # Within 1%: the export queue's wake-up (once per 512 spans) falls into a counted window or not.
    assert abs(at1000 - at10) <= 0.01 * at10
    assert abs(walked - at10) <= 0.01 * at10


def test_the_loop_kind_reaches_the_child_and_the_table() -> None:
    """--loop-kind sha256: the child builds C-code loops, and the table says what the handler ran."""
    args = argparse.Namespace(warmup=10, loop=55, loop_kind="sha256", interleave=False)
    cmd = bench_routes._child_cmd("fastapi", args, 1, stock_only=False)
    assert cmd[cmd.index("--loop") + 1 :][:3] == ["55", "--loop-kind", "sha256"]
    assert "--stock-only" not in cmd
    assert "--interleave" not in cmd
    args.interleave = True
    assert "--interleave" in bench_routes._child_cmd("fastapi", args, 1, stock_only=False)


def test_a_sha256_loop_digests_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    digested: list[bytes] = []

    class Recording:
        def __init__(self, data: bytes) -> None:
            digested.append(data)

        def digest(self) -> bytes:
            return b""

    monkeypatch.setattr(bench_routes.hashlib, "sha256", Recording)
    bench_routes.spinner(3, "sha256")()
    assert digested == [bench_routes.SHA_BLOCK] * 3
    assert len(bench_routes.SHA_BLOCK) == 65536


def test_the_table_names_the_loop_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _measure(monkeypatch, [_samples(50, 52.5, walk=50)], "fastapi", loop=55, loop_kind="sha256")
    assert "the handler runs 55 SHA-256 digests of 64 KB (C code) (--loop) instead of the walk" in text


def _recording_drivers(calls: list[tuple[str, int]], names: list[str]) -> dict[str, Any]:
    def driver(name: str) -> Any:
        return lambda n: calls.append((name, n))

    return {name: driver(name) for name in names}


def test_a_slice_runs_each_apps_requests_in_a_row() -> None:
    calls: list[tuple[str, int]] = []
    order = ["obskit@10", "bare@10+walk", "bare@10", "obskit@10+walk"]
    spent = bench_routes._slice(_recording_drivers(calls, order), order, 3)
    assert calls == [(name, 3) for name in order]
    assert set(spent) == set(order)


def test_interleave_alternates_the_control_pair_one_request_at_a_time() -> None:
    """--interleave: no instrumented request of the pair follows another (the after-effect's carry-over)."""
    calls: list[tuple[str, int]] = []
    order = ["obskit@10+walk", "bare@10", "bare@10+walk", "obskit@10"]
    spent = bench_routes._slice(_recording_drivers(calls, order), order, 3, interleave=True)
    pair = [("obskit@10+walk", 1), ("bare@10+walk", 1)] * 3
    assert calls == [*pair, ("bare@10", 3), ("obskit@10", 3)]
    assert set(spent) == set(order)
    assert all(seconds >= 0 for seconds in spent.values())
