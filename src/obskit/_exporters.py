"""One factory per signal: OTLP (gRPC or HTTP/protobuf), console, none, and a Prometheus pull endpoint.

Every value is passed explicitly, so the precedence decided in ``_config`` is the only one that applies (the OTel
exporters would otherwise fall back to reading the environment themselves). Exporter modules are imported lazily:
``import obskit`` must not pull in grpc.

``init()`` exports OTLP through the export buffer (``_buffer``): the SDK-facing exporters only encode and buffer,
and the senders below make one bounded attempt per call, leaving retries, backoff and the memory bound to the
buffer. The stock OTLP exporters (``span_exporter(settings)`` without a buffer) remain for ``obskit check``.
"""

from __future__ import annotations

import gzip
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from . import _semconv as sc
from ._buffer import (
    LINGER_SECONDS,
    Backoff,
    BufferedLogExporter,
    BufferedMetricExporter,
    BufferedSpanExporter,
    ExportBuffer,
    Sender,
    SendResult,
)
from ._config import Settings, mask_url
from .exceptions import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk._logs.export import LogRecordExporter
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader
    from opentelemetry.sdk.trace.export import SpanExporter

_logger = logging.getLogger("obskit")

# obskit signal -> (OTLP signal, gRPC method, response message, partial-success field)
_OTLP: Final[dict[str, tuple[str, str, str, str]]] = {
    sc.SIGNAL_SPANS: (
        "traces",
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        "opentelemetry.proto.collector.trace.v1.trace_service_pb2:ExportTraceServiceResponse",
        "rejected_spans",
    ),
    sc.SIGNAL_METRIC_POINTS: (
        "metrics",
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        "opentelemetry.proto.collector.metrics.v1.metrics_service_pb2:ExportMetricsServiceResponse",
        "rejected_data_points",
    ),
    sc.SIGNAL_LOGS: (
        "logs",
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        "opentelemetry.proto.collector.logs.v1.logs_service_pb2:ExportLogsServiceResponse",
        "rejected_log_records",
    ),
}
# The OTLP specification's retryable gRPC codes (the SDK exporter retries the same ones).
_RETRYABLE_GRPC: Final = frozenset(
    {"CANCELLED", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS"}
)
_RETRYABLE_HTTP: Final = frozenset({429, 502, 503, 504})
# The most of an HTTP response body read: an Export*ServiceResponse (a partial success: a count and a message) is
# a few hundred bytes. A collector answering with more must not make this process hold it (SPEC §5: memory within
# a configured bound).
MAX_RESPONSE_BYTES: Final = 1024 * 1024
_READ_CHUNK_BYTES: Final = 64 * 1024


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

    kwargs: dict[str, Any] = {
        "endpoint": settings.endpoint_for(signal),
        # requests verifies with its own CA bundle when no certificate file is given.
        "certificate_file": settings.certificate or True,
        "client_key_file": settings.client_key,
        "client_certificate_file": settings.client_certificate,
        "headers": settings.headers_for(signal),
        "timeout": settings.timeout_for(signal),
        "compression": Compression.Gzip if settings.compression == "gzip" else Compression.NoCompression,
    }
    if settings.certificate:
        kwargs["session"] = _pinned_verify_session()
    return kwargs


def _pinned_verify_session() -> Any:
    """A requests Session whose own ``verify`` (the OTLP CA file) wins over REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE.

    requests lets those variables replace a Session's ``verify`` (psf/requests#3829), and the OTel HTTP exporter
    sets the certificate on its Session: OTEL_EXPORTER_OTLP_CERTIFICATE would silently be ignored. Proxy variables
    still apply.
    """
    import requests

    class PinnedVerifySession(requests.Session):
        def merge_environment_settings(self, *args: Any, **kwargs: Any) -> Any:
            merged = super().merge_environment_settings(*args, **kwargs)
            if isinstance(self.verify, str):
                merged["verify"] = self.verify
            return merged

    return PinnedVerifySession()


# ---------------------------------------------------------------------------------------------------------------
# Senders: one attempt per call, bounded by the timeout; the export buffer retries.


def _response_class(signal: str) -> Any:
    import importlib

    module, _, name = _OTLP[signal][2].partition(":")
    return getattr(importlib.import_module(module), name)


def _rejected(signal: str, response: Any) -> tuple[int, str]:
    partial = response.partial_success
    return int(getattr(partial, _OTLP[signal][3])), str(partial.error_message)


def _grpc_retry_after(error: Any) -> float | None:
    """The collector's RetryInfo: in the ``google.rpc.retryinfo-bin`` trailer or in the rich status details."""
    from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped,unused-ignore]

    try:
        metadata = dict(error.trailing_metadata() or ())
    except Exception:  # not a call error (say, a channel that failed to start)
        return None
    info = None
    try:
        if (raw := metadata.get("google.rpc.retryinfo-bin")) is not None:
            info = error_details_pb2.RetryInfo.FromString(raw)
        elif (raw := metadata.get("grpc-status-details-bin")) is not None:
            for detail in status_pb2.Status.FromString(raw).details:
                if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    info = error_details_pb2.RetryInfo()
                    detail.Unpack(info)
    except Exception:  # an unparsable hint is no hint: the batch is retried on the normal backoff, not dropped
        _logger.debug("obskit: unparsable gRPC RetryInfo from the collector", exc_info=True)
        return None
    if info is None:
        return None
    # A hint that is no delay (NaN, infinite, negative) is none: the buffer's backoff applies.
    return Backoff.usable_hint(float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9))


class _GrpcCallGuard:
    """Keeps ``fork()`` out of this process's gRPC calls.

    gRPC's C core skips its fork handlers while another thread is inside a call ("Other threads are currently
    calling into gRPC, skipping fork() handlers"): the child inherits a poller claimed by a thread it does not have
    and aborts (SIGABRT) when it next polls. A gunicorn master that ran ``init()`` (``--preload``) exports its own
    telemetry while it forks replacement workers, so a worker could die at its first export. Every call of the
    senders below holds ``lock``; a fork waits for it, at most as long as the longest call may take.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wait_s = 0.0  # the longest sender timeout, plus slack for the call to return after its deadline
        self._held = False
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(
                before=self._before_fork, after_in_parent=self._after_in_parent, after_in_child=self._after_in_child
            )

    def allow_for(self, timeout: float) -> None:
        self.wait_s = max(self.wait_s, timeout + 1.0)

    def _before_fork(self) -> None:
        # Bounded: past the wait the fork goes ahead (gRPC's own behaviour, not a hang in the forking thread).
        self._held = self.wait_s > 0 and self.lock.acquire(timeout=self.wait_s)

    def _after_in_parent(self) -> None:
        if self._held:
            self._held = False
            self.lock.release()

    def _after_in_child(self) -> None:
        # A fresh lock: the parent's may be held by its export thread, which the child does not have.
        self.lock = threading.Lock()
        self._held = False


_grpc_calls = _GrpcCallGuard()


class GrpcSender:
    """Sends encoded OTLP requests of one signal over gRPC, one attempt per call."""

    def __init__(
        self,
        signal: str,
        *,
        endpoint: str,
        insecure: bool,
        credentials: Any,
        headers: Mapping[str, str] | None,
        timeout: float,
        compression: Any,
    ) -> None:
        self.signal = signal
        self.timeout = timeout
        # The OTel exporter's rule: a URL's host:port, or the text itself ("collector:4317").
        self._target = urlsplit(endpoint).netloc if "://" in endpoint else endpoint
        self._endpoint = endpoint
        self._insecure = insecure
        self._credentials = credentials
        self._metadata = tuple((key.lower(), value) for key, value in (headers or {}).items())
        self._compression = compression
        self._response = _response_class(signal)
        self._channel: Any = None
        self._call: Any = None
        _grpc_calls.allow_for(timeout)

    def describe(self) -> str:
        return mask_url(self._endpoint)

    def _stub(self) -> Any:
        if self._call is None:
            import grpc
            from opentelemetry.exporter.otlp.proto.grpc import _USER_AGENT_HEADER_VALUE

            options = [
                ("grpc.primary_user_agent", _USER_AGENT_HEADER_VALUE),
                # gRPC's reconnect backoff grows to 120 s by default: after a long outage the channel would keep
                # failing fast long after the collector is back. The buffer already paces the attempts.
                ("grpc.initial_reconnect_backoff_ms", 250),
                ("grpc.min_reconnect_backoff_ms", 250),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ]
            if self._insecure:
                channel = grpc.insecure_channel(self._target, options=options, compression=self._compression)
            else:
                channel = grpc.secure_channel(
                    self._target, self._credentials, options=options, compression=self._compression
                )
            # The payload is already the serialized request: no request serializer.
            self._call = channel.unary_unary(
                _OTLP[self.signal][1], request_serializer=None, response_deserializer=self._response.FromString
            )
            self._channel = channel
        return self._call

    def send(self, payload: bytes, timeout: float) -> SendResult:
        import grpc

        try:
            with _grpc_calls.lock:
                response = self._stub()(payload, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            code = error.code() if callable(getattr(error, "code", None)) else None
            name = getattr(code, "name", "UNKNOWN")
            if name == "UNAVAILABLE":
                # A channel that failed to connect waits out gRPC's own reconnect backoff and fails every call
                # meanwhile; a fresh one connects at the next attempt (the OTel exporter does the same).
                self.close()
            if name in _RETRYABLE_GRPC:
                return SendResult.retry(name, _grpc_retry_after(error))
            return SendResult.reject(name)
        rejected, message = _rejected(self.signal, response)
        return SendResult.success(rejected, message)

    def close(self) -> None:
        channel, self._channel, self._call = self._channel, None, None
        if channel is not None:
            with _grpc_calls.lock:
                channel.close()

    def reset_after_fork(self) -> None:
        # The parent's channel is the parent's: forget it without closing, and connect afresh.
        self._channel = self._call = None


def _http_retry_after(value: str | None) -> float | None:
    """``Retry-After``: delay-seconds or an HTTP-date (RFC 9110)."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:  # "nan", "inf", "1e400" (inf) and negative numbers are no delay: None, the normal backoff applies
        return Backoff.usable_hint(seconds)
    try:
        when = parsedate_to_datetime(text)
        delay = when.timestamp() - time.time()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return max(delay, 0.0)  # a date in the past: retry now


def _bounded_body(response: Any, limit: int, deadline: float) -> bytes | None:
    """The (decoded) body of a streamed ``requests`` response if it fits in ``limit`` bytes and arrives by ``deadline``.

    None when it does not: reading stops there (the caller closes the response, and with it the connection).
    ``requests``' timeout bounds each socket read, not the whole body: a collector trickling a byte a second
    would hold the sender thread for ever. Each read returns what one receive got (``read1``), and the socket's
    timeout shrinks to what is left of the attempt.
    """
    raw = response.raw
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            sock = getattr(getattr(raw, "connection", None), "sock", None)
            if sock is not None:
                sock.settimeout(remaining)
            chunk = raw.read1(_READ_CHUNK_BYTES, decode_content=True)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
    except Exception:  # cut off, reset, timed out, undecodable: the status line was the answer
        return None


class HttpSender:
    """Sends encoded OTLP requests of one signal over HTTP/protobuf, one attempt per call."""

    def __init__(
        self,
        signal: str,
        *,
        url: str,
        headers: Mapping[str, str] | None,
        timeout: float,
        gzip_body: bool,
        certificate: str | None,
        client_key: str | None,
        client_certificate: str | None,
    ) -> None:
        from opentelemetry.exporter.otlp.proto.http import _OTLP_HTTP_HEADERS

        self.signal = signal
        self.timeout = timeout
        self._url = url
        self._headers = {key.lower(): value for key, value in _OTLP_HTTP_HEADERS.items()}
        self._headers.update({key.lower(): value for key, value in (headers or {}).items()})
        if gzip_body:
            self._headers["content-encoding"] = "gzip"
        self._gzip = gzip_body
        # Passed with every request, not set on the Session: requests would let REQUESTS_CA_BUNDLE override it.
        self._verify: str | bool = certificate or True
        self._cert: str | tuple[str, str] | None = (
            (client_certificate, client_key) if client_certificate and client_key else client_certificate
        )
        self._response = _response_class(signal)
        self._session: Any = None

    def describe(self) -> str:
        return mask_url(self._url)

    def send(self, payload: bytes, timeout: float) -> SendResult:
        import requests

        if self._session is None:
            self._session = requests.Session()
        body = gzip.compress(payload, compresslevel=6) if self._gzip else payload
        deadline = time.monotonic() + timeout
        try:
            # stream=True: the body is read below, bounded in size and time, never whole (``response.content``).
            response = self._session.post(
                self._url,
                data=body,
                headers=self._headers,
                timeout=timeout,
                verify=self._verify,
                cert=self._cert,
                allow_redirects=False,
                stream=True,
            )
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            return SendResult.retry(type(exc).__name__)
        except requests.exceptions.RequestException as exc:  # a malformed URL or header: retrying cannot help
            return SendResult.reject(type(exc).__name__)
        with response:  # closed on every path: an unread (or partly read) body closes its connection
            status = response.status_code
            if 200 <= status < 300:
                # A 2xx is a success whatever follows (the OTLP specification): a body that is too large, too slow
                # (past the attempt's deadline), cut off or unparsable is a success without partial-success details.
                # Read (bounded) whatever the content type: a body read to its end leaves the connection reusable.
                rejected, message = 0, ""
                content = _bounded_body(response, MAX_RESPONSE_BYTES, deadline)
                if content is None:
                    _logger.debug(
                        "obskit: unreadable OTLP response body from %s (too large, too slow or cut off); "
                        "the export succeeded",
                        self.describe(),
                    )
                elif content and "protobuf" in response.headers.get("content-type", ""):
                    try:
                        rejected, message = _rejected(self.signal, self._response.FromString(content))
                    except Exception:  # an unparsable success body: the data was accepted
                        _logger.debug("obskit: unparsable OTLP response body from %s", self.describe())
                return SendResult.success(rejected, message)
            if status in _RETRYABLE_HTTP:
                return SendResult.retry(f"HTTP {status}", _http_retry_after(response.headers.get("retry-after")))
            return SendResult.reject(f"HTTP {status}")

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def reset_after_fork(self) -> None:
        # Pooled connections are shared with the parent after fork: never reuse (or close) them in the child.
        self._session = None


_SETTINGS_SIGNAL: Final = {"traces": sc.SIGNAL_SPANS, "metrics": sc.SIGNAL_METRIC_POINTS, "logs": sc.SIGNAL_LOGS}


def sender(settings: Settings, signal: str) -> Sender:
    """The OTLP sender of ``signal`` (``"traces"``, ``"metrics"`` or ``"logs"``) for the configured protocol."""
    name = _SETTINGS_SIGNAL[signal]
    if settings.protocol_for(signal) == "grpc":
        kwargs = _grpc_kwargs(settings, signal)
        return GrpcSender(
            name,
            endpoint=kwargs["endpoint"],
            insecure=kwargs["insecure"],
            credentials=kwargs.get("credentials"),
            headers=kwargs["headers"],
            timeout=kwargs["timeout"],
            compression=kwargs["compression"],
        )
    return HttpSender(
        name,
        url=settings.endpoint_for(signal),
        headers=settings.headers_for(signal),
        timeout=settings.timeout_for(signal),
        gzip_body=settings.compression == "gzip",
        certificate=settings.certificate,
        client_key=settings.client_key,
        client_certificate=settings.client_certificate,
    )


def export_buffer(settings: Settings) -> ExportBuffer | None:
    """The export buffer for every signal exported over OTLP, or None when none is."""
    kinds = {
        "traces": settings.traces_exporter,
        "metrics": settings.metrics_exporter,
        "logs": settings.logs_exporter,
    }
    senders = {_SETTINGS_SIGNAL[signal]: sender(settings, signal) for signal, kind in kinds.items() if kind == "otlp"}
    if not senders:
        return None
    # Spans and logs come in many batches a second under load: see LINGER_SECONDS. Metric points come once per
    # export interval, with nothing to wait for.
    linger = dict.fromkeys((sc.SIGNAL_SPANS, sc.SIGNAL_LOGS), LINGER_SECONDS)
    return ExportBuffer(senders, max_bytes=settings.export_buffer_bytes, linger=linger)


def span_exporter(settings: Settings, buffer: ExportBuffer | None = None) -> SpanExporter | None:
    """The exporter for spans, or None when OTEL_TRACES_EXPORTER=none; OTLP goes through ``buffer`` if given."""
    kind = settings.traces_exporter
    if kind == "none":
        return None
    if kind == "otlp" and buffer is not None and sc.SIGNAL_SPANS in buffer.signals:
        return BufferedSpanExporter(buffer)
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stdout)
    if settings.protocol_for("traces") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(**_grpc_kwargs(settings, "traces"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    return HttpSpanExporter(**_http_kwargs(settings, "traces"))


def log_exporter(settings: Settings, buffer: ExportBuffer | None = None) -> LogRecordExporter | None:
    """The exporter for log records, or None when OTEL_LOGS_EXPORTER=none; OTLP goes through ``buffer`` if given."""
    kind = settings.logs_exporter
    if kind == "none":
        return None
    if kind == "otlp" and buffer is not None and sc.SIGNAL_LOGS in buffer.signals:
        return BufferedLogExporter(buffer)
    if kind == "console":
        from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter

        return ConsoleLogRecordExporter(out=sys.stdout)
    if settings.protocol_for("logs") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter(**_grpc_kwargs(settings, "logs"))
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter

    return HttpLogExporter(**_http_kwargs(settings, "logs"))


def metric_exporter(settings: Settings, buffer: ExportBuffer | None = None) -> MetricExporter | None:
    """The push exporter for metrics (OTLP through ``buffer`` if given, or console); None for none/prometheus."""
    kind = settings.metrics_exporter
    if kind in ("none", "prometheus"):
        return None
    if kind == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter(out=sys.stdout)
    if buffer is not None and sc.SIGNAL_METRIC_POINTS in buffer.signals:
        return BufferedMetricExporter(buffer)
    if settings.protocol_for("metrics") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(**_grpc_kwargs(settings, "metrics"))
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter

    return HttpMetricExporter(**_http_kwargs(settings, "metrics"))


def metric_reader(settings: Settings, buffer: ExportBuffer | None = None) -> MetricReader | None:
    """The metric reader: periodic push over OTLP (through ``buffer`` if given) or console, Prometheus pull, or None."""
    if settings.metrics_exporter == "prometheus":
        return prometheus_reader(settings)
    exporter = metric_exporter(settings, buffer)
    if exporter is None:
        return None
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

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
