from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from obskit import ConfigError, _guard, metrics, testing
from obskit import _semconv as sc
from obskit._guard import GuardedMeterProvider, LabelGuard

OTHER = sc.OTHER

# Declared at import time, before anything is installed, as an application would.
IMPORT_TIME_COUNTER = metrics.counter("app.import_time", unit="{call}", attributes=["route"])


class Installed:
    """An SDK pipeline behind a GuardedMeterProvider, installed as obskit's current provider."""

    def __init__(self, guard: LabelGuard | None = None) -> None:
        self.reader = InMemoryMetricReader()
        self.sdk = MeterProvider(metric_readers=[self.reader])
        self.provider = GuardedMeterProvider(self.sdk, guard or LabelGuard(max_values=5))
        _guard.install(self.provider)

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        return [
            point
            for rm in (data.resource_metrics if data else ())
            for scope in rm.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def by_attrs(self, name: str, field: str = "value") -> dict[tuple[tuple[str, Any], ...], Any]:
        return {tuple(sorted(p.attributes.items())): getattr(p, field) for p in self.points(name)}


@pytest.fixture
def installed() -> Iterator[Installed]:
    pipeline = Installed()
    yield pipeline
    _guard.install(None)
    pipeline.sdk.shutdown()


def test_recording_before_install_is_a_noop() -> None:
    """With no provider installed, every kind of instrument records nothing and raises nothing."""
    assert _guard.current() is None
    metrics.counter("a.c", attributes=["k"]).add(1, {"k": "v"})
    metrics.up_down_counter("a.u").add(-1)
    metrics.histogram("a.h").record(0.5, {"undeclared": object()})  # type: ignore[dict-item]
    metrics.gauge("a.g").set(3)
    assert metrics.overflow_counts() == {}


def test_metric_declared_at_import_records_after_install() -> None:
    """A counter declared at import time, before install(), records into the provider installed later."""
    IMPORT_TIME_COUNTER.add(5, {"route": "/before"})  # nothing installed yet: dropped
    pipeline = Installed()
    try:
        IMPORT_TIME_COUNTER.add(2, {"route": "/after"})
        assert pipeline.by_attrs("app.import_time") == {(("route", "/after"),): 2}
    finally:
        _guard.install(None)
        pipeline.sdk.shutdown()


def test_metric_rebinds_to_a_newly_installed_provider() -> None:
    """Installing a new provider moves recording to it; installing None stops recording."""
    counter = metrics.counter("app.rebind", attributes=["k"])
    first = Installed()
    counter.add(1, {"k": "a"})
    second = Installed()
    counter.add(10, {"k": "a"})
    _guard.install(None)
    counter.add(100, {"k": "a"})
    assert first.by_attrs("app.rebind") == {(("k", "a"),): 1}
    assert second.by_attrs("app.rebind") == {(("k", "a"),): 10}
    first.sdk.shutdown()
    second.sdk.shutdown()


def test_user_metrics_follow_init_and_reinit() -> None:
    """Through obskit's own init (capture_telemetry), a module-level histogram records in each session."""
    histogram = metrics.histogram("app.latency", unit="s", attributes=["model.name"], buckets=[0.1, 1.0])
    with testing.capture_telemetry(max_label_values=2) as first:
        for name in ("a", "b", "c"):
            histogram.record(0.5, {"model.name": name})
        captured = first.metric("app.latency")
        assert {p.attributes["model.name"]: p.count for p in captured.points} == {"a": 1, "b": 1, OTHER: 1}
        assert list(captured.points[0].explicit_bounds) == [0.1, 1.0]
        assert metrics.overflow_counts() == {("app.latency", "model.name"): 1}
    with testing.capture_telemetry() as second:
        histogram.record(0.2, {"model.name": "z"})
        assert [dict(p.attributes) for p in second.metric("app.latency").points] == [{"model.name": "z"}]


def test_limit_and_other_for_user_metrics(installed: Installed) -> None:
    """A user counter keeps the guard's limit of distinct values per key, then records _OTHER."""
    counter = metrics.counter("app.requests", attributes=["tenant"])
    for i in range(8):
        counter.add(1, {"tenant": f"t{i}"})
    sums = installed.by_attrs("app.requests")
    assert sums == {(("tenant", f"t{i}"),): 1 for i in range(5)} | {(("tenant", OTHER),): 3}
    assert metrics.overflow_counts() == {("app.requests", "tenant"): 3}


def test_max_values_per_instrument(installed: Installed) -> None:
    """max_values overrides the guard's limit for that instrument only."""
    few = metrics.counter("app.few", attributes=["k"], max_values=2)
    many = metrics.counter("app.many", attributes=["k"], max_values=8)
    for i in range(6):
        few.add(1, {"k": i})
        many.add(1, {"k": i})
    assert len(installed.by_attrs("app.few")) == 3
    assert len(installed.by_attrs("app.many")) == 6


def test_undeclared_key_is_dropped_and_counted(installed: Installed, caplog: pytest.LogCaptureFixture) -> None:
    """An undeclared key is removed, counted under its own name, and warned about once."""
    caplog.set_level(logging.WARNING, logger="obskit")
    counter = metrics.counter("app.scored", attributes=["model.name"])
    for _ in range(3):
        counter.add(1, {"model.name": "m", "tenant": "acme"})
    assert installed.by_attrs("app.scored") == {(("model.name", "m"),): 3}
    assert metrics.overflow_counts() == {("app.scored", "tenant"): 3}
    assert installed.by_attrs(sc.CARDINALITY_OVERFLOW) == {
        ((sc.ATTR_OBSKIT_ATTRIBUTE, "tenant"), (sc.ATTR_OBSKIT_METRIC, "app.scored")): 3
    }
    [record] = [r for r in caplog.records if "not declared" in r.getMessage()]
    assert "'app.scored'" in record.getMessage()
    assert "'tenant'" in record.getMessage()


def test_metric_without_declared_keys_drops_every_key(installed: Installed) -> None:
    """A metric declared with no attributes records without any, counting each dropped key."""
    gauge = metrics.gauge("app.load")
    gauge.set(0.5, {"host": "a", "zone": "b"})
    assert installed.by_attrs("app.load") == {(): 0.5}
    assert metrics.overflow_counts() == {("app.load", "host"): 1, ("app.load", "zone"): 1}


def test_configured_deny_list_drops_a_declared_key() -> None:
    """A declared key that init()'s deny list names is dropped silently at record time."""
    pipeline = Installed(LabelGuard(denied=["tenant"]))
    try:
        counter = metrics.up_down_counter("app.queue", attributes=["tenant", "queue"])
        counter.add(3, {"tenant": "acme", "queue": "q"})
        counter.add(-1, {"tenant": "acme", "queue": "q"})
        assert pipeline.by_attrs("app.queue") == {(("queue", "q"),): 2}
        assert metrics.overflow_counts() == {}
    finally:
        _guard.install(None)
        pipeline.sdk.shutdown()


def test_bad_values_never_raise(installed: Installed) -> None:
    """Values of any type are normalised at record time instead of raising."""
    histogram = metrics.histogram("app.sizes", attributes=["k"])
    for value in (None, b"\xff\xfe", {"nested": [object()]}, object(), "x" * 1_000_000, 2**100):
        histogram.record(1, {"k": value})  # type: ignore[dict-item]
    values = {p.attributes.get("k") for p in installed.points("app.sizes")}
    assert len(values) == 6
    assert None in values  # the None measurement lost its key
    assert max(len(str(v)) for v in values) <= sc.MAX_LABEL_VALUE_LENGTH
    assert "\\xff\\xfe" in values


def test_every_kind_records(installed: Installed) -> None:
    """Counter, up-down counter, histogram and gauge each reach the SDK with their unit and description."""
    metrics.counter("k.c", unit="{item}", description="items", attributes=["a"]).add(2, {"a": "x"})
    metrics.up_down_counter("k.u", attributes=["a"]).add(-3, {"a": "x"})
    metrics.histogram("k.h", unit="s", attributes=["a"]).record(0.25, {"a": "x"})
    metrics.gauge("k.g", attributes=["a"]).set(7, {"a": "x"})
    assert installed.by_attrs("k.c") == {(("a", "x"),): 2}
    assert installed.by_attrs("k.u") == {(("a", "x"),): -3}
    assert installed.by_attrs("k.h", "sum") == {(("a", "x"),): 0.25}
    assert installed.by_attrs("k.g") == {(("a", "x"),): 7}
    data = installed.reader.get_metrics_data()
    assert data is not None
    [counter] = [m for rm in data.resource_metrics for s in rm.scope_metrics for m in s.metrics if m.name == "k.c"]
    assert (counter.unit, counter.description) == ("{item}", "items")
    scopes = {s.scope.name for rm in data.resource_metrics for s in rm.scope_metrics}
    assert metrics.SCOPE in scopes


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: metrics.counter(""), "invalid instrument name"),
        (lambda: metrics.counter("1abc"), "invalid instrument name"),
        (lambda: metrics.counter("has space"), "invalid instrument name"),
        (lambda: metrics.counter("x" * 256), "invalid instrument name"),
        (lambda: metrics.counter(5), "invalid instrument name"),  # type: ignore[arg-type]
        (lambda: metrics.histogram("ok", unit="µs"), "ASCII"),
        (lambda: metrics.gauge("ok", unit="x" * 64), "ASCII"),
        (lambda: metrics.counter("ok", attributes=["user.id"]), "deny list"),
        (lambda: metrics.counter("ok", attributes=["session.id"]), "deny list"),
        (lambda: metrics.counter("ok", attributes=[""]), "is not a string"),
        (lambda: metrics.counter("ok", attributes=[3]), "is not a string"),  # type: ignore[list-item]
        (lambda: metrics.counter("ok", attributes=["a", "a"]), "repeated"),
        (lambda: metrics.counter("ok", attributes="model.name"), "sequence of attribute keys"),
        (lambda: metrics.counter("ok", attributes=[f"k{i}" for i in range(33)]), "at most 32 keys"),
        (lambda: metrics.up_down_counter("ok", max_values=0), "max_values=0"),
        (lambda: metrics.up_down_counter("ok", max_values=True), "max_values=True"),
        (lambda: metrics.histogram("ok", buckets=[1.0, 0.5]), "strictly increasing"),
        (lambda: metrics.histogram("ok", buckets=[0.1, float("nan")]), "strictly increasing"),
        (lambda: metrics.histogram("ok", buckets="0.1"), "strictly increasing"),  # type: ignore[arg-type]
        (lambda: metrics.counter("ok", description=None), "description"),  # type: ignore[arg-type]
    ],
)
def test_declaration_errors(call: Any, message: str) -> None:
    """Invalid names, units, keys, limits and buckets raise ConfigError when the metric is declared."""
    with pytest.raises(ConfigError, match=message):
        call()


def test_valid_declarations() -> None:
    """Names and units at the edge of OpenTelemetry's rules are accepted, and repr names the keys."""
    counter = metrics.counter("a" + "b" * 254, unit="{request}", attributes=("b", "a"))
    assert counter.name == "a" + "b" * 254
    assert counter.attribute_keys == {"a", "b"}
    assert repr(metrics.histogram("x/y-z_1.2", buckets=[])) == "<Histogram 'x/y-z_1.2' attributes=[]>"
