from __future__ import annotations

import enum
import gc
import logging
import math
import threading
import tracemalloc
from collections.abc import Generator, Iterable, Iterator
from typing import Any

import pytest
from opentelemetry import metrics as otel
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData

from obskit import _guard, _safety
from obskit import _semconv as sc
from obskit._guard import GuardedMeterProvider, LabelGuard

OTHER = sc.OTHER


class Pipeline:
    """An SDK MeterProvider with an in-memory reader, behind a GuardedMeterProvider."""

    def __init__(self, guard: LabelGuard) -> None:
        self.reader = InMemoryMetricReader()
        self.sdk = MeterProvider(metric_readers=[self.reader])
        self.guard = guard
        self.provider = GuardedMeterProvider(self.sdk, guard)
        self.meter = self.provider.get_meter("test")
        self._data: MetricsData | None = None

    def collect(self) -> MetricsData:
        data = self.reader.get_metrics_data()
        assert data is not None
        self._data = data
        return data

    def points(self, name: str) -> list[Any]:
        data = self.collect()
        return [
            point
            for rm in data.resource_metrics
            for scope in rm.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def by_attrs(self, name: str, field: str = "value") -> dict[tuple[tuple[str, Any], ...], Any]:
        return {tuple(sorted(p.attributes.items())): getattr(p, field) for p in self.points(name)}


@pytest.fixture
def pipe() -> Iterator[Pipeline]:
    pipeline = Pipeline(LabelGuard(max_values=5))
    yield pipeline
    pipeline.sdk.shutdown()


def test_limit_plus_one_distinct_values_become_other(pipe: Pipeline) -> None:
    """Six distinct values under a limit of five give five series plus one _OTHER series."""
    counter = pipe.meter.create_counter("jobs")
    for i in range(6):
        counter.add(1, {"queue": f"q{i}"})
    assert pipe.by_attrs("jobs") == {(("queue", f"q{i}"),): 1 for i in range(5)} | {(("queue", OTHER),): 1}


def test_totals_add_up_across_series(pipe: Pipeline) -> None:
    """The sum and count over all series equal what was recorded: overflowing measurements are not lost."""
    counter = pipe.meter.create_counter("items")
    histogram = pipe.meter.create_histogram("latency", unit="s")
    recorded = 0
    for i in range(1000):
        counter.add(i % 7, {"route": f"/r{i % 50}", "method": "GET"})
        histogram.record(0.01, {"route": f"/r{i % 50}"})
        recorded += i % 7
    sums = pipe.by_attrs("items")
    counts = pipe.by_attrs("latency", "count")
    assert sum(sums.values()) == recorded
    assert sum(counts.values()) == 1000
    assert len(sums) == 6
    assert {dict(k)["route"] for k in counts} == {"/r0", "/r1", "/r2", "/r3", "/r4", OTHER}


def test_overflow_count_is_exact_and_exported(pipe: Pipeline) -> None:
    """Each replaced value counts once, per (instrument, key), in overflow_counts() and the exported counter."""
    counter = pipe.meter.create_counter("jobs")
    for i in range(20):
        counter.add(1, {"queue": f"q{i % 10}", "kind": "batch"})  # q5..q9 overflow, twice each
    histogram = pipe.meter.create_histogram("size")
    for i in range(8):
        histogram.record(1, {"model": f"m{i}"})  # m5..m7 overflow
    expected = {("jobs", "queue"): 10, ("size", "model"): 3}
    assert pipe.guard.overflow_counts() == expected
    assert pipe.by_attrs(sc.CARDINALITY_OVERFLOW) == {
        (("obskit.attribute", "queue"), ("obskit.metric", "jobs")): 10,
        (("obskit.attribute", "model"), ("obskit.metric", "size")): 3,
    }
    [metric] = [
        m
        for rm in pipe.collect().resource_metrics
        for s in rm.scope_metrics
        for m in s.metrics
        if m.name == sc.CARDINALITY_OVERFLOW
    ]
    assert metric.unit == sc.UNIT_MEASUREMENT
    assert getattr(metric.data, "is_monotonic", None) is True


def test_one_warning_per_instrument_and_key(pipe: Pipeline, caplog: pytest.LogCaptureFixture) -> None:
    """A warning naming instrument and key is logged once per pair, however many values overflow."""
    caplog.set_level(logging.WARNING, logger="obskit")
    jobs = pipe.meter.create_counter("jobs")
    size = pipe.meter.create_histogram("size")
    for i in range(100):
        jobs.add(1, {"queue": f"q{i}", "kind": f"k{i}"})
        size.record(1, {"queue": f"q{i}"})
    warnings = sorted((r.args[0], r.args[1]) for r in caplog.records if "exceeded" in r.getMessage())  # type: ignore[index]
    assert warnings == [("jobs", "kind"), ("jobs", "queue"), ("size", "queue")]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_default_deny_list_removes_keys(pipe: Pipeline) -> None:
    """Keys on the built-in deny list never reach the metric, whatever their value."""
    counter = pipe.meter.create_counter("requests")
    for i in range(3):
        counter.add(1, {"user.id": f"u{i}", "session.id": "s", "url.full": "http://x/?q", "http.route": "/a"})
    assert pipe.by_attrs("requests") == {(("http.route", "/a"),): 3}
    assert pipe.guard.overflow_counts() == {}
    assert pipe.guard.denied >= sc.DEFAULT_DENIED_LABELS


def test_extended_deny_list_removes_keys() -> None:
    """Keys given in ``denied`` are removed on top of the built-in deny list."""
    pipeline = Pipeline(LabelGuard(denied=["tenant.id"]))
    counter = pipeline.meter.create_counter("requests")
    counter.add(1, {"tenant.id": "acme", "enduser.id": "bob", "http.route": "/a"})
    assert pipeline.by_attrs("requests") == {(("http.route", "/a"),): 1}
    pipeline.sdk.shutdown()


class Color(enum.Enum):
    RED = 1


class Status(enum.IntEnum):
    OK = 200


class Raising:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __hash__(self) -> int:
        raise RuntimeError("no hash")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        (b"abc", "abc"),
        (b"\xff\xfe", "\\xff\\xfe"),
        (bytearray(b"xy"), "xy"),
        ({"a": {"b": [1, 2]}}, "{'a': {'b': [1, 2]}}"),
        ({1, 2}, "{1, 2}"),
        (Color.RED, "Color.RED"),
        (Status.OK, 200),
        (True, True),
        (3, 3),
        (2.5, 2.5),
        (2**70, str(2**70)),
        ([1, 2], (1, 2)),
        (("a", "b"), ("a", "b")),
        (["a", 1], "['a', 1]"),
        ([None], "[None]"),
        ("bad \udcff surrogate", "bad \\udcff surrogate"),
        (Raising(), "<Raising>"),
    ],
)
def test_values_of_any_type_are_normalised(pipe: Pipeline, value: object, expected: object) -> None:
    """Values of any type become valid OTel attribute values, are exported, and the OTLP encoding succeeds."""
    pipe.meter.create_counter("odd").add(1, {"v": value})  # type: ignore[dict-item]
    [point] = pipe.points("odd")
    assert dict(point.attributes) == {"v": expected}
    assert type(point.attributes["v"]) is type(expected)
    encode_metrics(pipe.collect()).SerializeToString()


def test_none_value_drops_the_key(pipe: Pipeline) -> None:
    """A None value drops its key, as OpenTelemetry does for span attributes, and the measurement stays."""
    pipe.meter.create_counter("odd").add(1, {"v": None, "w": "x"})
    assert pipe.by_attrs("odd") == {(("w", "x"),): 1}


def test_huge_and_odd_values_are_bounded() -> None:
    """A 1 MB string is cut to max_length characters; NaNs share one slot; huge ints and objects stay bounded."""
    guard = LabelGuard(max_values=10, max_length=64)
    huge = "x" * 1_000_000
    assert guard.filter("m", {"k": huge}) == {"k": "x" * 64}
    assert len(guard.filter("m", {"k": "é" * 1000})["k"]) == 64  # type: ignore[arg-type]
    assert len(guard.filter("m", {"k": b"\xff" * 100_000})["k"]) == 64  # type: ignore[arg-type]
    nan = guard.filter("m", {"n": float("nan")})["n"]
    assert guard.filter("m", {"n": float("nan")})["n"] is nan
    assert isinstance(nan, float)
    assert math.isnan(nan)
    assert len(guard.filter("m", {"i": 10**5000})["i"]) == 64  # type: ignore[arg-type]
    assert str(guard.filter("m", {"o": object()})["o"]).startswith("<object object at")
    deep: list[Any] = []
    for _ in range(10_000):
        deep = [deep]
    assert len(guard.filter("m", {"d": deep})["d"]) <= 64  # type: ignore[arg-type]
    assert guard.filter("m", {"seq": list(range(1000))})["seq"] == tuple(range(32))
    assert guard.overflow_counts() == {}


def test_equal_values_of_different_types_share_a_slot() -> None:
    """1, 1.0, True and an IntEnum equal to a seen int take no extra slot and record as the first one seen."""
    guard = LabelGuard(max_values=2)
    assert guard.filter("m", {"k": 1}) == {"k": 1}
    assert guard.filter("m", {"k": 1.0})["k"] is guard.filter("m", {"k": True})["k"]
    assert guard.filter("m", {"k": Status.OK}) == {"k": 200}
    assert guard.tracked_values() == {("m", "k"): 2}


def test_memory_is_bounded_under_attack() -> None:
    """Tens of thousands of distinct values, keys and instruments keep every internal structure at its cap."""
    guard = LabelGuard(max_values=100, max_keys=8, max_instruments=20)
    for i in range(30_000):
        guard.filter("m", {"a": f"a{i}", "b": i, "c": f"{i}".encode()})
    for i in range(10_000):
        guard.filter("keys", {f"key{i}": "v"})
    for i in range(1_000):
        guard.filter(f"instrument{i}", {"k": "v"})
    assert guard.tracked_values()[("m", "a")] == 100
    assert all(size <= 100 for size in guard.tracked_values().values())
    keys_state = guard.instrument("keys")
    assert keys_state.n_keys == 8
    assert len(keys_state.values) == 8
    assert len(keys_state.dropped_keys) == 8
    assert len(guard._instruments) == 20
    overflow = guard.overflow_counts()
    assert overflow[("m", "a")] == overflow[("m", "b")] == overflow[("m", "c")] == 29_900
    assert overflow[("keys", OTHER)] == 10_000 - 8 - 8
    assert overflow[(OTHER, OTHER)] == 1_000 - 20 + 2  # 'm' and 'keys' took two of the 20 slots
    assert len(overflow) <= 20 * (8 + 1) + 1


def test_memory_growth_is_flat_after_warm_up() -> None:
    """Once every slot is taken, 20,000 further distinct values allocate (almost) nothing that stays."""
    guard = LabelGuard(max_values=100)
    for i in range(200):
        guard.filter("m", {"a": f"a{i}", "b": f"b{i}"})
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(20_000):
            guard.filter("m", {"a": f"new{i}", "b": f"x{i}" * 10})
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert growth < 16 * 1024
    assert guard.tracked_values() == {("m", "a"): 100, ("m", "b"): 100}


def test_per_instrument_limit() -> None:
    """A limit given to filter() or register() applies to that instrument only."""
    guard = LabelGuard(max_values=3)
    guard.register("small", limit=1)
    values = ["a", "b", "c", "d"]
    assert [guard.filter("small", {"k": v})["k"] for v in values] == ["a", OTHER, OTHER, OTHER]
    assert [guard.filter("other", {"k": v})["k"] for v in values] == ["a", "b", "c", OTHER]
    assert [guard.filter("big", {"k": v}, limit=4)["k"] for v in values] == values
    assert guard.overflow_counts() == {("small", "k"): 3, ("other", "k"): 1}


def test_per_instrument_limit_through_the_provider() -> None:
    """An instrument registered with its own limit keeps that many values when recorded through the provider."""
    pipeline = Pipeline(LabelGuard(max_values=5))
    pipeline.guard.register("few", limit=2)
    counter = pipeline.meter.create_counter("few")
    for v in "abcd":
        counter.add(1, {"k": v})
    assert pipeline.by_attrs("few") == {(("k", "a"),): 1, (("k", "b"),): 1, (("k", OTHER),): 2}
    pipeline.sdk.shutdown()


def test_observable_instruments_are_filtered(pipe: Pipeline) -> None:
    """Observations from callbacks and generator callbacks of all three observable kinds pass the guard."""

    def callback(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(i, {"cpu": f"cpu{i}", "user.id": "u"}) for i in range(8)]

    def generator() -> Generator[Iterable[Observation], CallbackOptions, None]:
        yield []
        while True:
            yield [Observation(i, {"disk": f"d{i}"}) for i in range(7)]

    pipe.meter.create_observable_gauge("cpu.load", callbacks=[callback])
    pipe.meter.create_observable_counter("cpu.time", [callback], "s", "CPU time")
    pipe.meter.create_observable_up_down_counter("disk.used", callbacks=[generator()])
    # Observations that collapse into one _OTHER series: a gauge keeps the last, sums add up (5 + 6 + 7).
    assert pipe.by_attrs("cpu.load") == {(("cpu", f"cpu{i}"),): i for i in range(5)} | {(("cpu", OTHER),): 7}
    assert pipe.by_attrs("cpu.time") == {(("cpu", f"cpu{i}"),): i for i in range(5)} | {(("cpu", OTHER),): 18}
    assert pipe.by_attrs("disk.used") == {(("disk", f"d{i}"),): i for i in range(5)} | {(("disk", OTHER),): 11}


def test_meter_provider_api_compatibility(pipe: Pipeline) -> None:
    """The guarded provider and meter accept every OpenTelemetry API call a contrib instrumentor makes."""
    assert isinstance(pipe.provider, otel.MeterProvider)
    meter = otel.get_meter("contrib.lib", "1.0", pipe.provider, schema_url="https://x/1.26.0", attributes={"a": "b"})
    assert isinstance(meter, otel.Meter)
    assert (meter.name, meter.version, meter.schema_url) == ("contrib.lib", "1.0", "https://x/1.26.0")
    histogram = meter.create_histogram(
        name="http.server.request.duration",
        unit="s",
        description="Duration",
        explicit_bucket_boundaries_advisory=[0.1, 1.0],
    )
    assert isinstance(histogram, otel.Histogram)
    assert isinstance(meter.create_counter(name="c", unit="1", description="d"), otel.Counter)
    assert isinstance(meter.create_up_down_counter(name="u"), otel.UpDownCounter)
    assert isinstance(meter.create_gauge(name="g"), otel._Gauge)
    assert isinstance(meter.create_observable_gauge(name="og", callbacks=None), otel.ObservableGauge)
    histogram.record(0.5, attributes={"http.route": "/a"}, context=None)
    [point] = pipe.points("http.server.request.duration")
    assert list(point.explicit_bounds) == [0.1, 1.0]
    assert pipe.provider.force_flush() is True


def test_wsgi_instrumentor_metrics_pass_the_guard() -> None:
    """The contrib WSGI middleware, given the guarded provider, records hosts through the guard and stays balanced."""
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
    from opentelemetry.trace import NoOpTracerProvider

    from obskit._integrations._http import force_stable_http_semconv

    force_stable_http_semconv()  # what obskit.init() does; the process-wide mode would otherwise depend on test order
    pipeline = Pipeline(LabelGuard(max_values=3))

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    wrapped = OpenTelemetryMiddleware(app, tracer_provider=NoOpTracerProvider(), meter_provider=pipeline.provider)
    for i in range(10):
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": f"/p{i}",
            "SERVER_NAME": "host",
            "SERVER_PORT": "80",
            "wsgi.url_scheme": f"scheme{i}",  # a client-controlled value standing in for any attribute
            "wsgi.input": None,
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        b"".join(wrapped(environ, lambda status, headers, exc_info=None: None))  # type: ignore[arg-type]
    durations = {p.attributes["url.scheme"]: p.count for p in pipeline.points("http.server.request.duration")}
    assert durations == {"scheme0": 1, "scheme1": 1, "scheme2": 1, OTHER: 7}
    # +1 and -1 of one request land on the same series, so every active-requests series returns to zero.
    active = {p.attributes["url.scheme"]: p.value for p in pipeline.points("http.server.active_requests")}
    assert active == {"scheme0": 0, "scheme1": 0, "scheme2": 0, OTHER: 0}
    assert pipeline.guard.overflow_counts()[("http.server.request.duration", "url.scheme")] == 7
    pipeline.sdk.shutdown()


def test_concurrent_recording_is_exact() -> None:
    """Threads recording seen and new values concurrently lose no measurement and keep the limit."""
    pipeline = Pipeline(LabelGuard(max_values=50))
    counter = pipeline.meter.create_counter("hits")
    barrier = threading.Barrier(8)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(2_000):
            counter.add(1, {"v": f"v{(i * 7 + n) % 120}"})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sums = pipeline.by_attrs("hits")
    assert sum(sums.values()) == 16_000
    assert len(sums) == 51
    assert pipeline.guard.overflow_counts()[("hits", "v")] == sums[(("v", OTHER),)]
    pipeline.sdk.shutdown()


class Exploding(otel.NoOpCounter):
    def add(self, amount: float, attributes: Any = None, context: Any = None) -> None:
        raise RuntimeError("delegate failed")


def test_failures_are_swallowed_and_counted() -> None:
    """A failing delegate or a non-mapping attributes argument never raises into the caller once reraise is off."""
    guard = LabelGuard()
    counter = _guard._GuardedCounter(Exploding("x"), guard.instrument("x").filter)
    with pytest.raises(RuntimeError, match="delegate failed"):
        counter.add(1, {"a": "b"})  # our own tests re-raise internal errors
    previous = _safety.set_reraise(False)
    try:
        before = _safety.internal_error_count()
        counter.add(1, {"a": "b"})
        assert _safety.internal_error_count() == before + 1
        assert guard.filter("x", ["not", "a", "mapping"]) == {}  # type: ignore[arg-type]
    finally:
        _safety.set_reraise(previous)


def test_install_current_and_generation() -> None:
    """install() sets the current provider and bumps the generation every time, None included."""
    provider = GuardedMeterProvider(otel.NoOpMeterProvider())
    start = _guard.generation()
    _guard.install(provider)
    assert _guard.current() is provider
    assert _guard.snapshot() == (start + 1, provider)
    _guard.install(None)
    assert _guard.current() is None
    assert _guard.generation() == start + 2


def test_label_guard_rejects_bad_bounds() -> None:
    """Non-positive or non-integer bounds are refused when the guard is built."""
    with pytest.raises(ValueError, match="max_values=0"):
        LabelGuard(max_values=0)
    with pytest.raises(ValueError, match="max_length=True"):
        LabelGuard(max_length=True)


class Key(str, enum.Enum):
    ROUTE = "http.route"


def test_odd_keys_are_normalised_or_dropped() -> None:
    """Non-string keys are stringified, str-enum keys become plain strings, empty and huge keys are dropped."""
    guard = LabelGuard()
    out = guard.filter("m", {5: "a", "": "b", "k" * 300: "c", Key.ROUTE: "/x"})
    assert out == {"5": "a", "http.route": "/x"}
    assert all(type(key) is str for key in out)
    assert guard.overflow_counts() == {("m", OTHER): 2}


class HostileList(list[int]):
    def __getitem__(self, index: Any) -> Any:
        raise RuntimeError("no items")


def test_hostile_containers_do_not_raise() -> None:
    """Containers whose slicing fails become their type name instead of raising."""
    guard = LabelGuard()
    assert guard.filter("m", {"a": HostileList([1])}) == {"a": "<HostileList>"}


def test_reusable_filter_says_when_an_answer_may_be_cached() -> None:
    """What the server middlewares cache per attribute tuple: never an answer whose filtering counted an overflow."""
    guard = LabelGuard(max_values=1, denied=["tenant.id"])
    state = guard.instrument("http.server.request.duration")
    keys = frozenset({"http.route", "tenant.id"})

    assert state.reusable_filter({"http.route": "/a", "url.path": "/a/1"}, keys) == ({"http.route": "/a"}, True)
    assert state.reusable_filter({"http.route": "/a", "tenant.id": "t1"}, keys) == ({"http.route": "/a"}, True)
    before = guard.overflow_counts()
    assert state.reusable_filter({"http.route": "/b"}, keys) == ({"http.route": "_OTHER"}, False)
    assert guard.overflow_counts() != before  # counted, and counted again by the next measurement
    assert state.reusable_filter({"http.route": "/b"}, keys) == ({"http.route": "_OTHER"}, False)
    assert guard.overflow_counts()[("http.server.request.duration", "http.route")] == 2

    guard.register("declared", keys=["model.name"])
    declared = guard.instrument("declared")
    assert declared.reusable_filter({"model.name": "m", "extra": "x"}, None) == ({"model.name": "m"}, False)
