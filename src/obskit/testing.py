"""Test helpers shipped as product: the ``obskit_capture`` pytest fixture, ``capture_telemetry()`` and ``OtlpReceiver``.

The pytest plugin is registered through the ``pytest11`` entry point, so ``obskit_capture`` is available in any
project that installs obskit::

    def test_predict_is_traced(obskit_capture):
        predict([1.0, 2.0])                         # decorated with @obskit.inference(model="iris")
        [span] = obskit_capture.spans(name="inference iris")
        assert span.attributes["model.stage"] == "inference"
        assert obskit_capture.metric("obskit.model.duration").count(stage="inference") == 1
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _safety, _setup

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import ReadableLogRecord
    from opentelemetry.sdk.trace import ReadableSpan

    from ._receiver import OtlpReceiver

__all__ = ["CapturedMetric", "CapturedTelemetry", "OtlpReceiver", "capture_telemetry", "obskit_capture"]


def __getattr__(name: str) -> Any:
    # OtlpReceiver pulls in grpc: only when asked for.
    if name == "OtlpReceiver":
        from ._receiver import OtlpReceiver

        return OtlpReceiver
    raise AttributeError(name)


def _matches(attributes: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """``stage="inference"`` matches ``model.stage``: a short key matches the last dotted part of a key."""
    for key, value in wanted.items():
        if key in attributes:
            if attributes[key] != value:
                return False
            continue
        candidates = [k for k in attributes if k.rsplit(".", 1)[-1] == key or k == key.replace("_", ".")]
        if not candidates or all(attributes[k] != value for k in candidates):
            return False
    return True


@dataclass
class CapturedMetric:
    """The data points of one metric, with helpers that filter on attributes (``count(stage="inference")``)."""

    name: str
    points: list[Any] = field(default_factory=list)
    unit: str = ""

    def _select(self, attributes: Mapping[str, Any] | None, short: Mapping[str, Any]) -> list[Any]:
        wanted = {**(attributes or {}), **short}
        return [p for p in self.points if _matches(dict(p.attributes or {}), wanted)]

    def count(self, attributes: Mapping[str, Any] | None = None, **short: Any) -> int:
        """Histogram: total observations in the matching series."""
        return sum(int(getattr(p, "count", 0)) for p in self._select(attributes, short))

    def sum(self, attributes: Mapping[str, Any] | None = None, **short: Any) -> float:
        """Histogram sum or counter total over the matching series."""
        total = 0.0
        for point in self._select(attributes, short):
            total += float(getattr(point, "sum", getattr(point, "value", 0.0)))
        return total

    def value(self, attributes: Mapping[str, Any] | None = None, **short: Any) -> float:
        """Counter, up-down counter or gauge value summed over the matching series."""
        return sum(float(p.value) for p in self._select(attributes, short))

    def attributes(self) -> list[dict[str, Any]]:
        """The attribute sets of every series."""
        return [dict(p.attributes or {}) for p in self.points]


class CapturedTelemetry:
    """Spans, metrics and logs recorded in memory while obskit is configured for a test."""

    def __init__(self) -> None:
        from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.span_exporter = InMemorySpanExporter()
        self.metric_reader = InMemoryMetricReader()
        self.log_exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]

    def spans(
        self, name: str | None = None, attributes: Mapping[str, Any] | None = None, **short: Any
    ) -> list[ReadableSpan]:
        """Finished spans, optionally filtered by name and attributes."""
        wanted = {**(attributes or {}), **short}
        return [
            s
            for s in self.span_exporter.get_finished_spans()
            if (name is None or s.name == name) and _matches(dict(s.attributes or {}), wanted)
        ]

    def metric(self, name: str) -> CapturedMetric:
        """Collect now and return the named metric's points (empty when it was never recorded)."""
        captured = CapturedMetric(name)
        data = self.metric_reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        captured.unit = metric.unit or ""
                        captured.points.extend(metric.data.data_points)
        return captured

    def metric_names(self) -> set[str]:
        """Names of every metric recorded so far."""
        data = self.metric_reader.get_metrics_data()
        return {
            metric.name
            for resource_metrics in (data.resource_metrics if data else ())
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
        }

    def logs(self, body: str | None = None) -> list[ReadableLogRecord]:
        """Exported log records, optionally those whose body equals ``body``."""
        records = list(self.log_exporter.get_finished_logs())
        return [r for r in records if body is None or r.log_record.body == body]

    def clear(self) -> None:
        """Forget the spans and logs captured so far (metrics are cumulative and stay)."""
        self.span_exporter.clear()
        self.log_exporter.clear()


@contextmanager
def capture_telemetry(**init_kwargs: Any) -> Iterator[CapturedTelemetry]:
    """Configure obskit to record into memory for the duration of the block, for any test runner.

    Any previous ``obskit.init()`` is shut down first and obskit is left uninitialised afterwards. Apps created
    (or passed to ``instrument_app``) inside the block are instrumented with the in-memory providers.

    Args:
        **init_kwargs: the same keywords as ``obskit.init()`` (exporters are replaced by in-memory ones).

    Example:
        >>> with capture_telemetry() as telemetry:           # doctest: +SKIP
        ...     predict([1.0])
        >>> telemetry.spans(name="inference iris")           # doctest: +SKIP
    """
    init_kwargs.setdefault("system_metrics", False)
    init_kwargs.setdefault("auto_instrument", True)
    captured = CapturedTelemetry()
    _setup.init_capture(captured, **init_kwargs)
    try:
        yield captured
    finally:
        _reset()


def _reset() -> None:
    """Shut down obskit and forget its configuration and its once-only warnings (tests only)."""
    _setup._reset()
    _safety._reset()


try:
    import pytest
except ImportError:  # pragma: no cover - the plugin is only loaded by pytest itself
    pass
else:

    @pytest.fixture
    def obskit_capture() -> Iterator[CapturedTelemetry]:
        """Spans, metrics and logs recorded in memory for one test (see :class:`CapturedTelemetry`)."""
        with capture_telemetry() as captured:
            yield captured
