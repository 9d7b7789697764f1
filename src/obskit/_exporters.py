"""One factory per signal: OTLP (gRPC or HTTP/protobuf), console, none, and a Prometheus pull endpoint.

Every value is passed explicitly, so the precedence decided in ``_config`` is the only one that applies (the OTel
exporters would otherwise fall back to reading the environment themselves). Exporter modules are imported lazily:
``import obskit`` must not pull in grpc.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._config import Settings
from .exceptions import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk._logs.export import LogRecordExporter
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace.export import SpanExporter


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as handle:
        return handle.read()


def _grpc_kwargs(settings: Settings, signal: str) -> dict[str, Any]:
    from grpc import Compression

    endpoint = settings.endpoint_for(signal)
    scheme = urlsplit(endpoint).scheme if "://" in endpoint else ""
    insecure = settings.insecure
    if scheme == "https":
        insecure = False
    elif insecure is None:
        insecure = scheme == "http"
    kwargs: dict[str, Any] = {
        "endpoint": endpoint,
        "insecure": insecure,
        "headers": settings.headers_for(signal) or None,
        "timeout": settings.timeout_for(signal),
        "compression": Compression.Gzip if settings.compression == "gzip" else Compression.NoCompression,
    }
    if not insecure:
        import grpc

        kwargs["credentials"] = grpc.ssl_channel_credentials(
            root_certificates=_read(settings.certificate),
            private_key=_read(settings.client_key),
            certificate_chain=_read(settings.client_certificate),
        )
    return kwargs


def _http_kwargs(settings: Settings, signal: str) -> dict[str, Any]:
    from opentelemetry.exporter.otlp.proto.http import Compression

    return {
        "endpoint": settings.endpoint_for(signal),
        # requests verifies with its own CA bundle when no certificate file is given.
        "certificate_file": settings.certificate or True,
        "client_key_file": settings.client_key,
        "client_certificate_file": settings.client_certificate,
        "headers": settings.headers_for(signal),
        "timeout": settings.timeout_for(signal),
        "compression": Compression.Gzip if settings.compression == "gzip" else Compression.NoCompression,
    }


def span_exporter(settings: Settings) -> SpanExporter | None:
    """The exporter for spans, or None when OTEL_TRACES_EXPORTER=none."""
    kind = settings.traces_exporter
    if kind == "none":
        return None
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stdout)
    if settings.protocol_for("traces") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(**_grpc_kwargs(settings, "traces"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    return HttpSpanExporter(**_http_kwargs(settings, "traces"))


def log_exporter(settings: Settings) -> LogRecordExporter | None:
    """The exporter for log records, or None when OTEL_LOGS_EXPORTER=none."""
    kind = settings.logs_exporter
    if kind == "none":
        return None
    if kind == "console":
        from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter

        return ConsoleLogRecordExporter(out=sys.stdout)
    if settings.protocol_for("logs") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter(**_grpc_kwargs(settings, "logs"))
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter

    return HttpLogExporter(**_http_kwargs(settings, "logs"))


def metric_reader(settings: Settings) -> MetricReader | None:
    """The metric reader: periodic push over OTLP/console, a Prometheus pull endpoint, or None."""
    kind = settings.metrics_exporter
    if kind == "none":
        return None
    if kind == "prometheus":
        return prometheus_reader(settings)
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    exporter: Any
    if kind == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        exporter = ConsoleMetricExporter(out=sys.stdout)
    elif settings.protocol_for("metrics") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter(**_grpc_kwargs(settings, "metrics"))
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter

        exporter = HttpMetricExporter(**_http_kwargs(settings, "metrics"))
    return PeriodicExportingMetricReader(
        exporter,
        export_interval_millis=settings.metric_export_interval * 1000,
        export_timeout_millis=settings.metric_export_timeout * 1000,
    )


def prometheus_reader(settings: Settings) -> MetricReader:
    """A PrometheusMetricReader plus its /metrics HTTP server on OTEL_EXPORTER_PROMETHEUS_HOST/PORT."""
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server
    except ImportError:
        raise ConfigError(
            "OTEL_METRICS_EXPORTER='prometheus': needs the prometheus extra; pip install 'obskit[prometheus]'"
        ) from None
    reader = PrometheusMetricReader()
    try:
        start_http_server(port=settings.prometheus_port, addr=settings.prometheus_host)
    except OSError as exc:
        raise ConfigError(
            f"OTEL_EXPORTER_PROMETHEUS_PORT={settings.prometheus_port}: cannot listen on "
            f"{settings.prometheus_host}:{settings.prometheus_port} ({exc.strerror}). With several worker "
            "processes a pull endpoint per process cannot share one port: use OTLP push "
            "(OTEL_METRICS_EXPORTER=otlp) or run one worker per pod; see docs/deployment.md"
        ) from None
    return reader
