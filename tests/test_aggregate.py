from __future__ import annotations

import sys
import threading
from typing import Any

import pytest
from flask import Flask
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from obskit import _aggregate, _producer
from obskit import _semconv as sc
from obskit.testing import capture_telemetry


def test_buckets_are_upper_inclusive_with_sum_min_max():
    """A value equal to a boundary lands in that boundary's bucket, as the SDK's explicit histogram does."""
    histogram = _aggregate.Histogram("h", "s", "", (1.0, 2.0), _aggregate.OWN_SCOPE)
    series = histogram.series({"k": "v"})
    for value in (0.5, 1.0, 1.5, 2.0, 9.0):
        series.record(value)
    [snap] = histogram.snapshots()
    assert snap.bucket_counts == (2, 2, 1)
    assert (snap.count, snap.sum, snap.min, snap.max) == (5, 14.0, 0.5, 9.0)


def test_batched_records_match_the_sdk_histogram():
    """Records folded in batches (sorted, bisected) give the SDK explicit histogram's buckets, sum, min and max.

    1,000 values: three full batches and a partial one still queued when the snapshot is taken; boundary values,
    ints and values past the last bound included (no negatives: the SDK drops them), in random order.
    """
    import random

    bounds = (0.0, 0.005, 0.01, 0.1, 1.0, 10.0)
    rng = random.Random(7)
    values: list[float] = [rng.choice([*bounds, 3, 250, 1e6]) for _ in range(200)]
    values += [rng.uniform(0.0, 20.0) for _ in range(800)]
    rng.shuffle(values)
    assert len(values) % _aggregate.FOLD_AT
    histogram = _aggregate.Histogram("h", "s", "", bounds, _aggregate.OWN_SCOPE)
    series = histogram.series({})
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        metric_readers=[reader],
        views=[View(instrument_name="h", aggregation=ExplicitBucketHistogramAggregation(bounds))],
    )
    sdk = provider.get_meter("m").create_histogram("h")
    for value in values:
        series.record(value)
        sdk.record(value)
    data = reader.get_metrics_data()
    assert data is not None
    [point] = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    [snap] = histogram.snapshots()
    assert snap.bucket_counts == tuple(point.bucket_counts)
    assert (snap.count, snap.min, snap.max) == (point.count, point.min, point.max) == (1000, min(values), max(values))
    assert snap.sum == pytest.approx(point.sum, rel=1e-12)
    provider.shutdown()


def test_a_nan_record_keeps_the_unbatched_semantics():
    """A NaN lands in the first bucket and leaves min and max alone, as one-by-one bisecting did; the sum is NaN."""
    histogram = _aggregate.Histogram("h", "s", "", (1.0, 2.0), _aggregate.OWN_SCOPE)
    series = histogram.series({})
    for value in (1.5, float("nan"), 3.0):
        series.record(value)
    [snap] = histogram.snapshots()
    assert snap.bucket_counts == (1, 1, 1)
    assert (snap.count, snap.min, snap.max) == (3, 1.5, 3.0)
    assert snap.sum != snap.sum


def test_records_from_threads_are_all_counted_while_snapshots_fold():
    """Appends racing the folds of other recorders and of concurrent snapshots lose nothing and count nothing twice."""
    histogram = _aggregate.Histogram("h", "s", "", (0.5,), _aggregate.OWN_SCOPE)
    series = histogram.series({})
    done = threading.Event()
    seen: list[int] = []

    def record() -> None:
        for i in range(20_000):
            series.record(0.25 if i % 2 else 0.75, trace_id=i % 3, span_id=i)  # a third without an exemplar

    def snapshot() -> None:
        while not done.is_set():
            for snap in histogram.snapshots():
                seen.append(snap.count)

    watcher = threading.Thread(target=snapshot)
    threads = [threading.Thread(target=record) for _ in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython can: the races get their chances
    try:
        watcher.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        watcher.join()
    finally:
        sys.setswitchinterval(interval)
    [snap] = histogram.snapshots()
    assert snap.bucket_counts == (40_000, 40_000)
    assert (snap.count, snap.sum) == (80_000, 40_000.0)
    assert [e.value for e in snap.exemplars] == [0.25, 0.75]  # one per bucket, from a traced record
    assert all(e.trace_id == e.span_id % 3 != 0 for e in snap.exemplars)
    assert seen == sorted(seen)  # cumulative: a snapshot never goes back


def test_series_key_ignores_attribute_order():
    """The same attributes in another order are one series."""
    histogram = _aggregate.Histogram("h", "s", "", (1.0,), _aggregate.OWN_SCOPE)
    assert histogram.series({"a": "1", "b": "2"}) is histogram.series({"b": "2", "a": "1"})


def test_exemplar_only_for_sampled_spans_last_per_bucket():
    """Each bucket keeps the last exemplar recorded with span ids; unsampled records leave none."""
    histogram = _aggregate.Histogram("h", "s", "", (1.0,), _aggregate.OWN_SCOPE)
    series = histogram.series({})
    series.record(0.5)
    series.record(0.7, trace_id=1, span_id=2)
    series.record(0.9, trace_id=3, span_id=4)
    series.record(5.0)
    [snap] = histogram.snapshots()
    assert [(e.value, e.trace_id, e.span_id) for e in snap.exemplars] == [(0.9, 3, 4)]
    series.record(1.0, trace_id=5, span_id=6)  # on the boundary: the first bucket's, as its count
    series.record(7.0, trace_id=7, span_id=8)
    [snap] = histogram.snapshots()
    assert snap.bucket_counts == (4, 2)
    assert [(e.value, e.trace_id, e.span_id) for e in snap.exemplars] == [(1.0, 5, 6), (7.0, 7, 8)]


def test_series_are_bounded(monkeypatch: pytest.MonkeyPatch):
    """Past MAX_SERIES attribute sets, new ones share one _OTHER series; nothing is lost."""
    monkeypatch.setattr(_aggregate, "MAX_SERIES", 3)
    histogram = _aggregate.Histogram("h", "s", "", (1.0,), _aggregate.OWN_SCOPE)
    for i in range(10):
        histogram.series({"i": str(i)}).record(0.1)
    snaps = histogram.snapshots()
    assert len(snaps) == 4
    assert sum(s.count for s in snaps) == 10
    assert {"_OTHER": "_OTHER"} in [dict(s.attributes) for s in snaps]


def test_up_down_sum_reports_zero_and_is_exact_under_threads():
    """Concurrent +1/-1 pairs from many threads end at exactly zero, and a zero series is still reported."""
    up_down = _aggregate.UpDownSum("a", "{request}", "", _aggregate.OWN_SCOPE)

    def work() -> None:
        for _ in range(5000):
            up_down.add(1, {"m": "GET"})
            up_down.add(-1, {"m": "GET"})

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert up_down.snapshots() == [({"m": "GET"}, 0)]


def test_up_down_cells_share_one_sum_with_add():
    """Cells of one attribute set count into the same sum as add(); up()/down() from threads end where they began."""
    up_down = _aggregate.UpDownSum("a", "{request}", "", _aggregate.OWN_SCOPE)
    first, second = up_down.cell({"m": "GET"}), up_down.cell({"m": "GET"})
    up_down.add(5, {"m": "GET"})
    first.up()
    first.up()
    second.down()
    assert up_down.snapshots() == [({"m": "GET"}, 6)]

    def work() -> None:
        for _ in range(5000):
            first.up()
            second.down()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    second.add(-6)
    assert up_down.snapshots() == [({"m": "GET"}, 0)]


def test_reader_collects_registry_into_existing_scope():
    """An attached reader sees the registry's metrics in the scope that created them, beside the SDK's."""
    registry = _aggregate.Registry()
    reader = InMemoryMetricReader()
    _producer.attach(reader, lambda: registry, Resource.get_empty())
    provider = MeterProvider(metric_readers=[reader], resource=Resource({"service.name": "x"}))
    provider.get_meter("contrib.scope", "1.0").create_counter("sdk.counter").add(1)
    registry.histogram("ours", unit="s", description="d", bounds=(1.0,), scope=("contrib.scope", "1.0")).series(
        {"k": "v"}
    ).record(0.5)
    registry.up_down_sum("active", unit="{r}", description="", scope=("obskit", None)).add(1, {})
    data = reader.get_metrics_data()
    assert data is not None
    [resource_metrics] = data.resource_metrics
    assert resource_metrics.resource.attributes["service.name"] == "x"
    scopes = {sm.scope.name: sorted(m.name for m in sm.metrics) for sm in resource_metrics.scope_metrics}
    assert scopes == {"contrib.scope": ["ours", "sdk.counter"], "obskit": ["active"]}
    provider.shutdown()


def _flask_points(meter_provider: Any) -> None:
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.trace import NoOpTracerProvider

    from obskit._integrations._http import force_stable_http_semconv

    force_stable_http_semconv()
    app = Flask(__name__)

    @app.get("/items/<int:i>")
    def item(i: int) -> str:
        return "x" * i

    FlaskInstrumentor.instrument_app(app, tracer_provider=NoOpTracerProvider(), meter_provider=meter_provider)
    client = app.test_client()
    for path in ("/items/1", "/items/20", "/nope", "/items/3"):
        client.get(path)


def test_http_metrics_match_the_sdk_stream():
    """Through obskit's aggregation, contrib's HTTP metrics have the SDK's names, units, attributes and counts."""

    def collect(metric_names: set[str], points: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for rm in points.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name in metric_names:
                        out[m.name] = (
                            sm.scope.name,
                            m.unit,
                            sorted(
                                (
                                    tuple(sorted(dict(p.attributes).items())),
                                    getattr(p, "count", None),
                                    tuple(getattr(p, "bucket_counts", ())),
                                    getattr(p, "value", None),
                                )
                                for p in m.data.data_points
                            ),
                        )
        return out

    names = {sc.METRIC_HTTP_SERVER_REQUEST_DURATION, sc.HTTP_SERVER_ACTIVE_REQUESTS}
    # Reference: contrib on the SDK, with obskit's views on the two SPEC metrics.
    from obskit._setup import _views

    reader = InMemoryMetricReader()
    sdk = MeterProvider(metric_readers=[reader], views=_views())
    _flask_points(sdk)
    expected = collect(names, reader.get_metrics_data())
    sdk.shutdown()
    with capture_telemetry(auto_instrument=False) as telemetry:
        from obskit import _guard

        provider = _guard.current()
        assert provider is not None
        assert provider.aggregated is not None
        _flask_points(provider)
        actual = collect(names, telemetry.metric_reader.get_metrics_data())
    assert set(expected) == names
    # Durations differ run to run: compare all but the duration histogram's bucket placement.
    for name in names:
        scope, unit, points = expected[name]
        got_scope, got_unit, got_points = actual[name]
        assert (got_scope, got_unit) == (scope, unit)
        if name == sc.METRIC_HTTP_SERVER_REQUEST_DURATION:
            assert [(a, c) for a, c, _b, _v in got_points] == [(a, c) for a, c, _b, _v in points]
        else:
            assert got_points == points
