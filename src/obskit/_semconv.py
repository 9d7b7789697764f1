"""Telemetry names, units and bucket boundaries. Constants only; imports nothing from obskit."""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.url_attributes import URL_SCHEME
from opentelemetry.semconv.metrics.http_metrics import HTTP_SERVER_REQUEST_DURATION

OTHER: Final = "_OTHER"

# HTTP (stable semantic conventions)
HTTP_SERVER_ACTIVE_REQUESTS: Final = "http.server.active_requests"
ATTR_HTTP_REQUEST_METHOD: Final = HTTP_REQUEST_METHOD
ATTR_HTTP_ROUTE: Final = HTTP_ROUTE
ATTR_HTTP_RESPONSE_STATUS_CODE: Final = HTTP_RESPONSE_STATUS_CODE
ATTR_URL_SCHEME: Final = URL_SCHEME
ATTR_ERROR_TYPE: Final = ERROR_TYPE
METRIC_HTTP_SERVER_REQUEST_DURATION: Final = HTTP_SERVER_REQUEST_DURATION

# Advisory boundaries of http.server.request.duration (seconds), stable HTTP semconv.
HTTP_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

# The SDK's default explicit boundaries, for histograms created without advice.
DEFAULT_HISTOGRAM_BUCKETS: Final = (
    0.0,
    5.0,
    10.0,
    25.0,
    50.0,
    75.0,
    100.0,
    250.0,
    500.0,
    750.0,
    1000.0,
    2500.0,
    5000.0,
    7500.0,
    10000.0,
)
HTTP_SERVER_REQUEST_BODY_SIZE: Final = "http.server.request.body.size"
HTTP_SERVER_RESPONSE_BODY_SIZE: Final = "http.server.response.body.size"

# Model stages
MODEL_DURATION: Final = "obskit.model.duration"
MODEL_ACTIVE: Final = "obskit.model.active"
MODEL_BATCH_SIZE: Final = "obskit.model.batch_size"
MODEL_TIME_TO_FIRST_OUTPUT: Final = "obskit.model.time_to_first_output"
ATTR_MODEL_NAME: Final = "model.name"
ATTR_MODEL_VERSION: Final = "model.version"
ATTR_MODEL_STAGE: Final = "model.stage"
ATTR_MODEL_BATCH_SIZE: Final = "model.batch_size"
STAGE_PREPROCESS: Final = "preprocess"
STAGE_INFERENCE: Final = "inference"
STAGE_POSTPROCESS: Final = "postprocess"
UNKNOWN_VERSION: Final = "unknown"

# Model latency spans milliseconds (a tokenizer) to tens of seconds (a large generation).
MODEL_DURATION_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

UNIT_SECONDS: Final = "s"
UNIT_REQUEST: Final = "{request}"
UNIT_CALL: Final = "{call}"
UNIT_ITEM: Final = "{item}"
UNIT_MEASUREMENT: Final = "{measurement}"

# obskit about itself
CARDINALITY_OVERFLOW: Final = "obskit.cardinality.overflow"
ATTR_OBSKIT_METRIC: Final = "obskit.metric"
ATTR_OBSKIT_ATTRIBUTE: Final = "obskit.attribute"
TELEMETRY_EXPORTED: Final = "obskit.telemetry.exported"
TELEMETRY_DROPPED: Final = "obskit.telemetry.dropped"
INTERNAL_ERRORS: Final = "obskit.internal_errors"
TELEMETRY_BUFFERED: Final = "obskit.telemetry.buffered"
EXPORT_BUFFER_USAGE: Final = "obskit.export_buffer.usage"
ATTR_OBSKIT_SIGNAL: Final = "obskit.signal"
ATTR_OBSKIT_REASON: Final = "obskit.reason"
SIGNAL_SPANS: Final = "spans"
SIGNAL_METRIC_POINTS: Final = "metric_points"
SIGNAL_LOGS: Final = "logs"

# Keys never used as metric attributes (they may stay on spans).
DEFAULT_DENIED_LABELS: Final = frozenset(
    {
        "user.id",
        "user.name",
        "user.email",
        "enduser.id",
        "session.id",
        "client.address",
        "client.port",
        "network.peer.address",
        "network.peer.port",
        "url.full",
        "url.path",
        "url.query",
        "http.target",
        "http.url",
        "http.request.id",
        "request.id",
        "request_id",
        "x-request-id",
        "trace_id",
        "span_id",
    }
)
# Long label values are cut to this many characters before the guard sees them.
MAX_LABEL_VALUE_LENGTH: Final = 128

# Excluded by default: health, readiness, liveness and metrics endpoints (regexes, searched in the path).
# One anchored pattern (contrib's form of it prefixes the leading ^ with the URL's scheme and host). The second
# line: the Open Inference Protocol's probes (KServe v2, Triton, MLServer), server and per-model readiness.
DEFAULT_EXCLUDED_URLS: Final = (
    r"^/(health|healthz|healthcheck|ready|readyz|readiness|live|livez|liveness|metrics|ping"
    r"|v2/health/(live|ready)|v2/models/[^/]+(/versions/[^/]+)?/ready)/?$"
)

INSTRUMENTATION_NAME: Final = "obskit"

# Prometheus names of the instruments above (OpenTelemetry-to-Prometheus translation).
PROM_HTTP_DURATION: Final = "http_server_request_duration_seconds"
PROM_MODEL_DURATION: Final = "obskit_model_duration_seconds"
PROM_MODEL_TTFO: Final = "obskit_model_time_to_first_output_seconds"
PROM_CARDINALITY_OVERFLOW: Final = "obskit_cardinality_overflow_total"
PROM_TELEMETRY_EXPORTED: Final = "obskit_telemetry_exported_total"
PROM_TELEMETRY_DROPPED: Final = "obskit_telemetry_dropped_total"
PROM_INTERNAL_ERRORS: Final = "obskit_internal_errors_total"
