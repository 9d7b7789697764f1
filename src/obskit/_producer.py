"""Hands obskit's own histograms (``_aggregate``) to every SDK metric reader at collection time.

The Python SDK has no MetricProducer hook; a reader collects through the callback its MeterProvider installs with
``_set_collect_callback``. Wrapping that one callback per reader appends obskit's scope to what the SDK collected,
so OTLP, Prometheus and in-memory readers see one stream, under the same resource.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from ._aggregate import Registry, Scope
from ._safety import swallow_errors
from ._version import __version__


def attach(reader: MetricReader, registry: Callable[[], Registry | None], resource: Resource) -> None:
    """Make ``reader`` include the histograms of ``registry()`` (looked up at each collection) in what it collects.

    Call before the reader is given to a ``MeterProvider``.
    """
    install = reader._set_collect_callback

    def set_collect_callback(func: Any) -> None:
        if func is None:
            install(None)
            return

        def collect(metric_reader: MetricReader, timeout_millis: float = 10_000) -> Any:
            data = func(metric_reader, timeout_millis=timeout_millis)
            current = registry()
            if current is None:
                return data
            with swallow_errors("stage metrics collection"):
                data = merge(data, current, resource)
            return data

        install(collect)

    setattr(reader, "_set_collect_callback", set_collect_callback)  # noqa: B010 - a final method, on purpose


def metrics(registry: Registry, now: int) -> dict[Scope, list[Metric]]:
    """The registry's histograms and up-down sums as SDK cumulative metrics per scope (only those with data)."""
    out: dict[Scope, list[Metric]] = {}
    start = registry.start_time_unix_nano
    for histogram in registry.histograms():
        points = [
            HistogramDataPoint(
                attributes=dict(s.attributes),
                start_time_unix_nano=start,
                time_unix_nano=now,
                count=s.count,
                sum=s.sum,
                bucket_counts=list(s.bucket_counts),
                explicit_bounds=list(histogram.bounds),
                min=s.min,
                max=s.max,
                exemplars=[
                    Exemplar({}, e.value, e.time_unix_nano, span_id=e.span_id, trace_id=e.trace_id) for e in s.exemplars
                ],
            )
            for s in histogram.snapshots()
        ]
        if points:
            data = HistogramData(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE)
            metric = Metric(name=histogram.name, description=histogram.description, unit=histogram.unit, data=data)
            out.setdefault(histogram.scope, []).append(metric)
    for up_down in registry.up_down_sums():
        values = [
            NumberDataPoint(attributes=dict(attributes), start_time_unix_nano=start, time_unix_nano=now, value=value)
            for attributes, value in up_down.snapshots()
        ]
        if values:
            sum_data = Sum(
                data_points=values, aggregation_temporality=AggregationTemporality.CUMULATIVE, is_monotonic=False
            )
            metric = Metric(name=up_down.name, description=up_down.description, unit=up_down.unit, data=sum_data)
            out.setdefault(up_down.scope, []).append(metric)
    return out


def merge(data: MetricsData | None, registry: Registry, resource: Resource) -> MetricsData | None:
    """``data`` plus the registry's metrics, each in its instrumentation scope, under the first resource."""
    from time import time_ns

    ours = metrics(registry, time_ns())
    if not ours:
        return data
    if data is None or not data.resource_metrics:
        first_resource, scopes, schema_url, rest = resource, [], "", []
    else:
        first, *rest = data.resource_metrics
        first_resource, scopes, schema_url = first.resource, list(first.scope_metrics), first.schema_url
    for (name, version), added in ours.items():
        for index, existing in enumerate(scopes):
            if existing.scope.name == name:  # the SDK also recorded in this scope: one scope, not two
                scopes[index] = ScopeMetrics(
                    scope=existing.scope, metrics=[*existing.metrics, *added], schema_url=existing.schema_url
                )
                break
        else:
            scope = InstrumentationScope(name, version if version is not None else __version__)
            scopes.append(ScopeMetrics(scope=scope, metrics=added, schema_url=""))
    merged = ResourceMetrics(resource=first_resource, scope_metrics=scopes, schema_url=schema_url)
    return MetricsData(resource_metrics=[merged, *rest])
