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
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from ._aggregate import Registry
from ._safety import swallow_errors
from ._semconv import INSTRUMENTATION_NAME
from ._version import __version__

_SCOPE = InstrumentationScope(INSTRUMENTATION_NAME, __version__)


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


def metrics(registry: Registry, now: int) -> list[Metric]:
    """The registry's histograms as SDK cumulative histogram metrics (only those with data)."""
    out: list[Metric] = []
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
            out.append(Metric(name=histogram.name, description=histogram.description, unit=histogram.unit, data=data))
    return out


def merge(data: MetricsData | None, registry: Registry, resource: Resource) -> MetricsData | None:
    """``data`` plus one scope with the registry's metrics, under the first resource (or ``resource``)."""
    from time import time_ns

    ours = metrics(registry, time_ns())
    if not ours:
        return data
    scope = ScopeMetrics(scope=_SCOPE, metrics=ours, schema_url="")
    if data is None or not data.resource_metrics:
        return MetricsData(resource_metrics=[ResourceMetrics(resource=resource, scope_metrics=[scope], schema_url="")])
    first, *rest = data.resource_metrics
    scopes = list(first.scope_metrics)
    for index, existing in enumerate(scopes):
        if existing.scope.name == _SCOPE.name:  # obskit's SDK-recorded metrics: one scope, not two
            scopes[index] = ScopeMetrics(
                scope=existing.scope, metrics=[*existing.metrics, *ours], schema_url=existing.schema_url
            )
            break
    else:
        scopes.append(scope)
    merged = ResourceMetrics(resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url)
    return MetricsData(resource_metrics=[merged, *rest])
