"""obskit: production-grade OpenTelemetry for Flask and FastAPI model servers in one call.

Example:
    >>> import obskit                                    # doctest: +SKIP
    >>> obskit.init(service_name="fraud-scorer")         # doctest: +SKIP
    >>> @obskit.inference(model="fraud-xgb", version="3")  # doctest: +SKIP
    ... def predict(features): ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import _setup, metrics
from ._integrations import instrument_app
from ._setup import Handle, force_flush, shutdown
from ._stages import inference, postprocess, preprocess, set_batch_size, stage
from ._version import __version__
from .exceptions import ConfigError, IntegrationUnavailable, ObskitError, ObskitWarning

__all__ = [
    "ConfigError",
    "Handle",
    "IntegrationUnavailable",
    "ObskitError",
    "ObskitWarning",
    "__version__",
    "force_flush",
    "inference",
    "init",
    "instrument_app",
    "metrics",
    "postprocess",
    "preprocess",
    "set_batch_size",
    "shutdown",
    "stage",
]


def init(
    *,
    service_name: str | None = None,
    service_version: str | None = None,
    environment: str | None = None,
    resource_attributes: Mapping[str, str] | None = None,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
    compression: str | None = None,
    certificate: str | None = None,
    client_key: str | None = None,
    client_certificate: str | None = None,
    insecure: bool | None = None,
    traces_exporter: str | None = None,
    metrics_exporter: str | None = None,
    logs_exporter: str | None = None,
    sampler: str | None = None,
    sampler_arg: float | None = None,
    propagators: Sequence[str] | None = None,
    metric_export_interval: float | None = None,
    metric_export_timeout: float | None = None,
    bsp_schedule_delay: float | None = None,
    bsp_max_queue_size: int | None = None,
    bsp_max_export_batch_size: int | None = None,
    blrp_schedule_delay: float | None = None,
    blrp_max_queue_size: int | None = None,
    prometheus_host: str | None = None,
    prometheus_port: int | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    max_label_values: int | None = None,
    max_label_length: int | None = None,
    denied_labels: Sequence[str] | None = None,
    excluded_urls: Sequence[str] | None = None,
    export_buffer_bytes: int | str | None = None,
    shutdown_timeout: float | None = None,
    auto_instrument: bool | None = None,
    http_instrumentation: str | None = None,
    log_level: int | str | None = None,
    capture_headers: Sequence[str] | None = None,
    capture_query: bool | None = None,
    system_metrics: bool | None = None,
    sdk_disabled: bool | None = None,
) -> Handle:
    """Configure traces, metrics and logs export, and instrument Flask and FastAPI apps.

    Every argument has an environment twin (see docs/configuration.md); an explicit argument wins over the
    environment, which wins over the default. ``None`` (or an empty string) means "not given". Durations given as
    arguments are in seconds (the ``OTEL_*`` variables are in milliseconds).

    Calling ``init()`` again returns the same handle and installs nothing new (with an ``ObskitWarning`` if the
    arguments differ). Under ``OTEL_SDK_DISABLED=true`` nothing is installed and every obskit call is a no-op.

    Args:
        service_name: ``service.name``. Env: ``OTEL_SERVICE_NAME``.
        service_version: ``service.version``. Env: ``OBSKIT_SERVICE_VERSION``.
        environment: ``deployment.environment.name``. Env: ``OBSKIT_ENVIRONMENT``.
        resource_attributes: extra resource attributes. Env: ``OTEL_RESOURCE_ATTRIBUTES``.
        endpoint: base OTLP endpoint. Env: ``OTEL_EXPORTER_OTLP_ENDPOINT``.
        protocol: ``"grpc"`` or ``"http/protobuf"``. Env: ``OTEL_EXPORTER_OTLP_PROTOCOL``.
        headers: export headers (secret). Env: ``OTEL_EXPORTER_OTLP_HEADERS``.
        timeout: export timeout in seconds. Env: ``OTEL_EXPORTER_OTLP_TIMEOUT`` (ms).
        compression: ``"gzip"`` or ``"none"``. Env: ``OTEL_EXPORTER_OTLP_COMPRESSION``.
        certificate: CA file for TLS. Env: ``OTEL_EXPORTER_OTLP_CERTIFICATE``.
        client_key: mTLS key file. Env: ``OTEL_EXPORTER_OTLP_CLIENT_KEY``.
        client_certificate: mTLS certificate file. Env: ``OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE``.
        insecure: gRPC plaintext without an ``http://`` scheme. Env: ``OTEL_EXPORTER_OTLP_INSECURE``.
        traces_exporter: ``otlp``, ``console`` or ``none``. Env: ``OTEL_TRACES_EXPORTER``.
        metrics_exporter: ``otlp``, ``console``, ``prometheus`` or ``none``. Env: ``OTEL_METRICS_EXPORTER``.
        logs_exporter: ``otlp``, ``console`` or ``none``. Env: ``OTEL_LOGS_EXPORTER``.
        sampler: trace sampler name. Env: ``OTEL_TRACES_SAMPLER``.
        sampler_arg: ratio in [0, 1] for ratio samplers. Env: ``OTEL_TRACES_SAMPLER_ARG``.
        propagators: ``tracecontext``, ``baggage`` or ``none``. Env: ``OTEL_PROPAGATORS``.
        metric_export_interval: seconds between metric exports. Env: ``OTEL_METRIC_EXPORT_INTERVAL`` (ms).
        metric_export_timeout: seconds. Env: ``OTEL_METRIC_EXPORT_TIMEOUT`` (ms).
        bsp_schedule_delay: seconds between span batches. Env: ``OTEL_BSP_SCHEDULE_DELAY`` (ms).
        bsp_max_queue_size: spans waiting for export. Env: ``OTEL_BSP_MAX_QUEUE_SIZE``.
        bsp_max_export_batch_size: spans per export. Env: ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``.
        blrp_schedule_delay: seconds between log batches. Env: ``OTEL_BLRP_SCHEDULE_DELAY`` (ms).
        blrp_max_queue_size: log records waiting for export. Env: ``OTEL_BLRP_MAX_QUEUE_SIZE``.
        prometheus_host: pull endpoint address. Env: ``OTEL_EXPORTER_PROMETHEUS_HOST``.
        prometheus_port: pull endpoint port. Env: ``OTEL_EXPORTER_PROMETHEUS_PORT``.
        model_name: default ``model.name`` of stage decorators. Env: ``OBSKIT_MODEL_NAME``.
        model_version: default ``model.version``. Env: ``OBSKIT_MODEL_VERSION``.
        max_label_values: distinct values per (metric, attribute). Env: ``OBSKIT_MAX_LABEL_VALUES``.
        max_label_length: metric attribute values are cut to this length. Env: ``OBSKIT_MAX_LABEL_LENGTH``.
        denied_labels: attribute keys kept off metrics. Env: ``OBSKIT_DENIED_LABELS``.
        excluded_urls: path regexes with no telemetry. Env: ``OBSKIT_EXCLUDED_URLS``.
        export_buffer_bytes: memory bound of the export buffer. Env: ``OBSKIT_EXPORT_BUFFER_BYTES``.
        shutdown_timeout: deadline of the final flush, seconds. Env: ``OBSKIT_SHUTDOWN_TIMEOUT``.
        auto_instrument: instrument apps created after init(). Env: ``OBSKIT_AUTO_INSTRUMENT``.
        http_instrumentation: ``"obskit"`` (lean middleware, the default) or ``"contrib"`` (the OpenTelemetry
            contrib instrumentors). Env: ``OBSKIT_HTTP_INSTRUMENTATION``.
        log_level: lowest level exported over OTLP. Env: ``OBSKIT_LOG_LEVEL``.
        capture_headers: headers recorded on server spans (opt-in). Env: ``OBSKIT_CAPTURE_HEADERS``.
        capture_query: record query strings on server spans (opt-in). Env: ``OBSKIT_CAPTURE_QUERY``.
        system_metrics: export ``process.*`` metrics. Env: ``OBSKIT_SYSTEM_METRICS``.
        sdk_disabled: disable everything. Env: ``OTEL_SDK_DISABLED``.

    Returns:
        The :class:`Handle` (``force_flush()``, ``shutdown()``, ``settings``).

    Raises:
        ConfigError: a malformed value, naming the variable or argument, the value (masked when secret) and
            what is accepted.

    Example:
        >>> handle = obskit.init(service_name="fraud-scorer", model_name="fraud-xgb")  # doctest: +SKIP
    """
    given: dict[str, Any] = {k: v for k, v in locals().items() if v is not None}
    return _setup.init(**given)
