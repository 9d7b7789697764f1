"""What the two benchmark apps share: the tiny model, the VARIANT switch and each variant's setup.

A variant is set up in three steps, so that every library is wired the way its documentation shows:
``setup()`` before the app object exists (providers, ``obskit.init()``), ``stages()`` for the three model-stage
decorators, ``instrument_flask(app)``/``instrument_fastapi(app)`` once the routes exist.

Env: VARIANT (one of VARIANTS), ROUTES (total routes of the app, default 10), OTLP_ENDPOINT (the receiver's
gRPC address, for the stock OpenTelemetry variant; obskit reads the standard OTEL_* variables).
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from typing import Any

VARIANTS = (
    "bare",  # no instrumentation at all
    "otel",  # stock OpenTelemetry: contrib instrumentor + 3 manual stage spans + 3 histogram records, OTLP/gRPC
    "ddtrace",  # ddtrace-run (patches Flask/FastAPI) + 3 manual stage spans, to a dummy local agent
    "prometheus",  # prometheus-flask-exporter / prometheus-fastapi-instrumentator + 3 stage histograms
    "obskit_full",  # obskit.init(): server span + 3 stage spans, RED + stage metrics, OTLP/gRPC
    "obskit_metrics",  # the same with OTEL_TRACES_EXPORTER=none
    "obskit_disabled",  # the same with OTEL_SDK_DISABLED=true
)
VARIANT = os.environ.get("VARIANT", "bare")
if VARIANT not in VARIANTS:
    raise SystemExit(f"VARIANT={VARIANT!r}: expected one of {', '.join(VARIANTS)}")
ROUTES = int(os.environ.get("ROUTES", "10"))
# /predict and /healthz are real; the rest are parametrised filler routes registered *before* /predict, so a
# router that matches linearly walks all of them on every request (the worst case of a large app).
FILLER_ROUTES = max(0, ROUTES - 2)

MODEL = "iris-centroid"
VERSION = "1"
SERVICE = "bench-model-server"

# ---------------------------------------------------------------------------------------------------------------
# The model: a nearest-centroid iris classifier, a few microseconds of pure Python per stage.

CLASSES = ("setosa", "versicolor", "virginica")
SCALE = (0.83, 0.44, 1.77, 0.76)
CENTROIDS = tuple(
    tuple(c / s for c, s in zip(centroid, SCALE, strict=True))
    for centroid in ((5.01, 3.43, 1.46, 0.25), (5.94, 2.77, 4.26, 1.33), (6.59, 2.97, 5.55, 2.03))
)


def featurize(rows: list[list[float]]) -> list[tuple[float, ...]]:
    out = []
    for row in rows:
        if len(row) != 4:
            raise ValueError(f"expected 4 features, got {len(row)}")
        out.append(tuple(float(x) / s for x, s in zip(row, SCALE, strict=True)))
    return out


def infer(features: list[tuple[float, ...]]) -> list[list[float]]:
    result = []
    for row in features:
        logits = [-math.dist(row, centroid) for centroid in CENTROIDS]
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]
        total = sum(exps)
        result.append([e / total for e in exps])
    return result


def to_labels(probabilities: list[list[float]]) -> list[dict[str, object]]:
    return [
        {"label": CLASSES[max(range(3), key=row.__getitem__)], "confidence": round(max(row), 4)}
        for row in probabilities
    ]


# ---------------------------------------------------------------------------------------------------------------
# Per-variant setup.

_otel: dict[str, Any] = {}


def setup() -> None:
    """Everything that must happen before the app object is created."""
    if VARIANT.startswith("obskit"):
        import obskit

        # obskit_metrics/obskit_disabled differ only by OTEL_TRACES_EXPORTER / OTEL_SDK_DISABLED (set by the runner).
        obskit.init(service_name=SERVICE, service_version="1.0.0")
    elif VARIANT == "otel":
        # The OpenTelemetry Python "getting started" wiring: SDK providers set globally, OTLP/gRPC exporters,
        # a BatchSpanProcessor and a PeriodicExportingMetricReader, then the contrib instrumentor.
        from opentelemetry import metrics, trace
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        endpoint = os.environ["OTLP_ENDPOINT"]
        resource = Resource.create({"service.name": SERVICE})
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
        trace.set_tracer_provider(tracer_provider)
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint, insecure=True))
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
        _otel["tracer"] = trace.get_tracer("bench.model")
        _otel["histogram"] = metrics.get_meter("bench.model").create_histogram(
            "model.stage.duration", unit="s", description="Duration of model stage calls."
        )


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def stages() -> tuple[Decorator, Decorator, Decorator]:
    """The preprocess, inference and postprocess decorators of this variant."""
    names = ("preprocess", "inference", "postprocess")
    if VARIANT.startswith("obskit"):
        import obskit

        return (
            # batch_size as a callable over the arguments: the usage the obskit README shows.
            obskit.preprocess(model=MODEL, version=VERSION, batch_size=len),
            obskit.inference(model=MODEL, version=VERSION),
            obskit.postprocess(model=MODEL, version=VERSION),
        )
    if VARIANT == "otel":
        return tuple(_otel_stage(name) for name in names)  # type: ignore[return-value]
    if VARIANT == "ddtrace":
        return tuple(_ddtrace_stage(name) for name in names)  # type: ignore[return-value]
    if VARIANT == "prometheus":
        from prometheus_client import Histogram

        histogram = Histogram(
            "model_stage_duration_seconds", "Duration of model stage calls.", ("model", "version", "stage")
        )
        # prometheus_client's documented decorator: a labelled child's .time().
        return tuple(histogram.labels(MODEL, VERSION, name).time() for name in names)  # type: ignore[return-value]
    return (_identity, _identity, _identity)


def decorated_model() -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """The model's three stages (featurize, infer, to_labels) under this variant's stage decorators."""
    preprocess, inference, postprocess = stages()
    return preprocess(featurize), inference(infer), postprocess(to_labels)


def _identity(func: Callable[..., Any]) -> Callable[..., Any]:
    return func


def _otel_stage(stage: str) -> Decorator:
    # What a user writes by hand with the OpenTelemetry API: a child span and a histogram record per call.
    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        tracer, histogram = _otel["tracer"], _otel["histogram"]
        name = f"{stage} {MODEL}"
        attributes = {"model.name": MODEL, "model.version": VERSION, "model.stage": stage}

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            with tracer.start_as_current_span(name, attributes=attributes):
                result = func(*args, **kwargs)
            histogram.record(time.perf_counter() - start, attributes)
            return result

        return wrapper

    return decorator


def _ddtrace_stage(stage: str) -> Decorator:
    try:
        from ddtrace.trace import tracer
    except ImportError:  # ddtrace < 3
        from ddtrace import tracer  # type: ignore[attr-defined,no-redef]

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        # A child span per call with the same tags obskit sets, as ddtrace's custom-instrumentation docs show.
        tags = {"model.name": MODEL, "model.version": VERSION, "model.stage": stage}
        name = f"model.{stage}"

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with tracer.trace(name, resource=MODEL) as span:
                span.set_tags(tags)
                return func(*args, **kwargs)

        return wrapper

    return decorator


def instrument_flask(app: Any) -> None:
    if VARIANT == "otel":
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        FlaskInstrumentor().instrument_app(app)
    elif VARIANT == "prometheus":
        from prometheus_flask_exporter import PrometheusMetrics

        PrometheusMetrics(app)  # default metrics by endpoint, /metrics route
    # obskit instruments the app itself (it was created after init()); ddtrace-run patched Flask at import.


def instrument_fastapi(app: Any) -> None:
    if VARIANT == "otel":
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app)
    elif VARIANT == "prometheus":
        from prometheus_fastapi_instrumentator import Instrumentator

        Instrumentator().instrument(app).expose(app)
