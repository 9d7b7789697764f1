"""A real in-process OTLP receiver (gRPC and HTTP), for tests and ``obskit tail``.

Modelled on OpenTelemetry's ``OtlpProtoTestServer``: exports arrive over the real wire, are decoded into
plain frozen dataclasses, and can be awaited with deadlines. Fault injection (failures, delay, black hole)
simulates a misbehaving collector.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import math
import socket
import ssl
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import grpc

# protobuf and googleapis-common-protos ship no type information.
from google.protobuf import json_format  # type: ignore[import-untyped,unused-ignore]
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped,unused-ignore]
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

__all__ = ["OtlpReceiver", "ReceivedLog", "ReceivedMetricPoint", "ReceivedSpan"]

_logger = logging.getLogger(__name__)
_T = TypeVar("_T")
_MAX_BODY = 64 * 1024 * 1024
# signal -> (request class, response class); the keys are also the HTTP paths' last segment.
_SIGNALS: dict[str, tuple[Any, Any]] = {
    "traces": (trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse),
    "metrics": (metrics_service_pb2.ExportMetricsServiceRequest, metrics_service_pb2.ExportMetricsServiceResponse),
    "logs": (logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse),
}
_SC = grpc.StatusCode
_HTTP_TO_GRPC: dict[int, Any] = {
    400: _SC.INVALID_ARGUMENT, 401: _SC.UNAUTHENTICATED, 403: _SC.PERMISSION_DENIED, 404: _SC.NOT_FOUND,
    409: _SC.ABORTED, 429: _SC.RESOURCE_EXHAUSTED, 499: _SC.CANCELLED, 500: _SC.INTERNAL, 501: _SC.UNIMPLEMENTED,
    502: _SC.UNAVAILABLE, 503: _SC.UNAVAILABLE, 504: _SC.DEADLINE_EXCEEDED,
}  # fmt: skip
_GRPC_TO_HTTP: dict[Any, int] = {code: status for status, code in _HTTP_TO_GRPC.items()}  # 503 wins over 502
# OTLP/JSON carries ids as hex, whereas protobuf's JSON mapping expects base64 for bytes fields.
_HEX_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    """One span as received over OTLP; ids are lowercase hex, ``parent_span_id`` is ``""`` for a root."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: str
    status_code: str
    status_message: str
    start_time_ns: int
    end_time_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    resource: dict[str, Any]
    scope: str
    protocol: str

    @property
    def duration_s(self) -> float:
        """Span duration in seconds."""
        return (self.end_time_ns - self.start_time_ns) / 1e9


@dataclass(frozen=True, slots=True)
class ReceivedMetricPoint:
    """One data point of one metric; ``value`` is set for sums and gauges, ``count``/``sum`` for the others."""

    name: str
    description: str
    unit: str
    kind: str
    is_monotonic: bool
    temporality: str
    attributes: dict[str, Any]
    value: float | int | None
    count: int | None
    sum: float | None
    bucket_counts: tuple[int, ...]
    explicit_bounds: tuple[float, ...]
    exemplars: list[dict[str, Any]]
    time_unix_nano: int
    start_time_unix_nano: int
    resource: dict[str, Any]
    scope: str
    protocol: str


@dataclass(frozen=True, slots=True)
class ReceivedLog:
    """One log record as received over OTLP; ``time_unix_nano`` falls back to the observed time if unset."""

    body: Any
    severity_text: str
    severity_number: int
    trace_id: str
    span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    time_unix_nano: int
    protocol: str


@dataclass(frozen=True)
class _Failure:
    http_status: int
    grpc_code: Any
    message: str
    retry_after_s: float | None = None

    def status(self) -> Any:
        status = status_pb2.Status(code=self.grpc_code.value[0], message=self.message)
        if self.retry_after_s is not None:
            status.details.add().Pack(self.retry_info())
        return status

    def retry_info(self) -> Any:
        info = error_details_pb2.RetryInfo()
        info.retry_delay.FromNanoseconds(int((self.retry_after_s or 0.0) * 1e9))
        return info


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return _attrs(v.kvlist_value.values)
    return getattr(v, kind)


def _attrs(kvs: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def _enum(enum_type: Any, value: int, prefix: str) -> str:
    try:
        name: str = enum_type.Name(value)
    except ValueError:
        return str(value)
    return name.removeprefix(prefix)


def _decode_spans(req: Any, protocol: str) -> list[object]:
    out: list[object] = []
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(
                    ReceivedSpan(
                        name=s.name,
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        kind=_enum(Span.SpanKind, s.kind, "SPAN_KIND_"),
                        status_code=_enum(Status.StatusCode, s.status.code, "STATUS_CODE_"),
                        status_message=s.status.message,
                        start_time_ns=s.start_time_unix_nano,
                        end_time_ns=s.end_time_unix_nano,
                        attributes=_attrs(s.attributes),
                        events=[(e.name, _attrs(e.attributes)) for e in s.events],
                        resource=_attrs(rs.resource.attributes),
                        scope=ss.scope.name,
                        protocol=protocol,
                    )
                )
    return out


def _exemplar(e: Any) -> dict[str, Any]:
    value = e.as_int if e.WhichOneof("value") == "as_int" else e.as_double
    return {
        "trace_id": e.trace_id.hex(),
        "span_id": e.span_id.hex(),
        "value": value,
        "attributes": _attrs(e.filtered_attributes),
        "time_unix_nano": e.time_unix_nano,
    }


def _decode_metrics(req: Any, protocol: str) -> list[object]:
    out: list[object] = []
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind is None:
                    continue
                data = getattr(m, kind)
                temporality = getattr(data, "aggregation_temporality", 0)
                for dp in data.data_points:
                    value, count, total, buckets, bounds = None, None, None, (), ()
                    if kind in ("sum", "gauge"):
                        value = dp.as_int if dp.WhichOneof("value") == "as_int" else dp.as_double
                    else:
                        count, total = dp.count, dp.sum
                        if kind == "histogram":
                            buckets, bounds = tuple(dp.bucket_counts), tuple(dp.explicit_bounds)
                        elif kind == "exponential_histogram":  # scale, offset and negative buckets are not decoded
                            buckets = tuple(dp.positive.bucket_counts)
                    out.append(
                        ReceivedMetricPoint(
                            name=m.name,
                            description=m.description,
                            unit=m.unit,
                            kind=kind,
                            is_monotonic=bool(getattr(data, "is_monotonic", False)),
                            temporality=""
                            if not temporality
                            else _enum(AggregationTemporality, temporality, "AGGREGATION_TEMPORALITY_"),
                            attributes=_attrs(dp.attributes),
                            value=value,
                            count=count,
                            sum=total,
                            bucket_counts=buckets,
                            explicit_bounds=bounds,
                            exemplars=[_exemplar(e) for e in getattr(dp, "exemplars", ())],
                            time_unix_nano=dp.time_unix_nano,
                            start_time_unix_nano=dp.start_time_unix_nano,
                            resource=_attrs(rm.resource.attributes),
                            scope=sm.scope.name,
                            protocol=protocol,
                        )
                    )
    return out


def _decode_logs(req: Any, protocol: str) -> list[object]:
    out: list[object] = []
    for rl in req.resource_logs:
        for sl in rl.scope_logs:
            for r in sl.log_records:
                out.append(
                    ReceivedLog(
                        body=_value(r.body),
                        severity_text=r.severity_text,
                        severity_number=int(r.severity_number),
                        trace_id=r.trace_id.hex(),
                        span_id=r.span_id.hex(),
                        attributes=_attrs(r.attributes),
                        resource=_attrs(rl.resource.attributes),
                        scope=sl.scope.name,
                        time_unix_nano=r.time_unix_nano or r.observed_time_unix_nano,
                        protocol=protocol,
                    )
                )
    return out


_DECODERS: dict[str, Callable[[Any, str], list[object]]] = {
    "traces": _decode_spans,
    "metrics": _decode_metrics,
    "logs": _decode_logs,
}


def _hex_ids_to_base64(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: base64.b64encode(bytes.fromhex(v)).decode()
            if k in _HEX_ID_KEYS and isinstance(v, str)
            else _hex_ids_to_base64(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids_to_base64(v) for v in node]
    return node


def _matches(actual: Mapping[str, Any], wanted: Mapping[str, Any] | None) -> bool:
    return not wanted or all(k in actual and actual[k] == v for k, v in wanted.items())


class OtlpReceiver:
    """An in-process OTLP receiver: gRPC and HTTP (protobuf or JSON), plain, TLS or mTLS.

    Everything received is decoded into `ReceivedSpan`, `ReceivedMetricPoint` and `ReceivedLog` and can be
    queried or awaited with a deadline. Ports are ephemeral by default and kept across ``stop()``/``start()``,
    so a test can simulate a collector restart. Faults (`set_failure`, `set_delay`, `black_hole`) simulate a
    misbehaving collector; requests answered with a fault are counted but not stored.

    Args:
        host: Interface to listen on.
        grpc_port: gRPC port; 0 picks a free one on the first start.
        http_port: HTTP port; 0 picks a free one on the first start.
        tls_cert: PEM server certificate; with ``tls_key``, both servers use TLS.
        tls_key: PEM private key of ``tls_cert``.
        client_ca: PEM CA bundle; when set, clients must present a certificate it signed (mTLS).
        on_receive: Called, on a server thread, with the signal (``"traces"``, ``"metrics"``, ``"logs"``) and the
            decoded items of every stored export; exceptions it raises are logged and swallowed. Also an
            attribute that can be set later (``obskit tail`` prints from it).

    Example:
        ```python
        with OtlpReceiver() as rx:
            exporter = OTLPSpanExporter(endpoint=rx.grpc_endpoint, insecure=True)
            ...
            span = rx.wait_for_span("POST /predict", attributes={"http.route": "/predict"})
        ```
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        grpc_port: int = 0,
        http_port: int = 0,
        *,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        client_ca: str | None = None,
        on_receive: Callable[[str, list[object]], None] | None = None,
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if client_ca is not None and tls_cert is None:
            raise ValueError("client_ca (mTLS) requires tls_cert and tls_key")
        self._host, self._grpc_port, self._http_port = host, grpc_port, http_port
        self._tls_cert, self._tls_key, self._client_ca = tls_cert, tls_key, client_ca
        self.on_receive = on_receive
        self._cond = threading.Condition()
        self._store: dict[str, list[Any]] = {signal: [] for signal in _SIGNALS}
        self._requests: Counter[tuple[str, str]] = Counter()
        self._failures: Counter[tuple[str, str]] = Counter()
        self._failure: _Failure | None = None
        self._delay = 0.0
        self._black_hole = False
        # Bumped by stop(): wakes handlers parked in a delay or black hole so shutdown never hangs.
        self._generation = 0
        self._grpc_server: Any = None
        self._http_server: _HttpServer | None = None
        self._http_thread: threading.Thread | None = None
        self._executor: futures.ThreadPoolExecutor | None = None

    def start(self) -> OtlpReceiver:
        """Start both servers (a no-op when running), on the ports of the first start if restarted.

        Returns:
            The receiver itself.

        Raises:
            RuntimeError: A port cannot be bound (for example, it was taken while the receiver was stopped).
        """
        if self._grpc_server is not None:
            return self
        self._executor = futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="obskit-otlp-grpc")
        server = grpc.server(
            self._executor,
            # No SO_REUSEPORT: binding a port somebody else holds must fail instead of sharing it.
            options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", _MAX_BODY)],
        )
        adders: list[tuple[Callable[[Any, Any], None], type]] = [
            (trace_service_pb2_grpc.add_TraceServiceServicer_to_server, _TraceServicer),
            (metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server, _MetricsServicer),
            (logs_service_pb2_grpc.add_LogsServiceServicer_to_server, _LogsServicer),
        ]
        for add, servicer in adders:
            add(servicer(self), server)
        address = f"{_bracketed(self._host)}:{self._grpc_port}"
        if self._tls_cert is not None and self._tls_key is not None:
            creds = grpc.ssl_server_credentials(
                [(_read(self._tls_key), _read(self._tls_cert))],
                root_certificates=_read(self._client_ca) if self._client_ca else None,
                require_client_auth=self._client_ca is not None,
            )
            port = server.add_secure_port(address, creds)
        else:
            port = server.add_insecure_port(address)
        if not port:  # older grpcio returns 0 instead of raising
            raise RuntimeError(f"OtlpReceiver: cannot bind gRPC to {address}")
        server.start()
        try:
            http = _HttpServer((self._host, self._http_port), self, self._ssl_context())
        except BaseException:
            server.stop(None)
            raise
        self._grpc_port, self._http_port = port, http.server_address[1]
        self._grpc_server, self._http_server = server, http
        self._http_thread = threading.Thread(
            target=http.serve_forever, kwargs={"poll_interval": 0.05}, name="obskit-otlp-http", daemon=True
        )
        self._http_thread.start()
        return self

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop both servers; parked (delayed or black-holed) requests are released, so this never hangs.

        What was received, the counters and the fault settings are kept for a later `start`.

        Args:
            grace: Seconds in-flight gRPC calls get to finish before they are cancelled.
        """
        with self._cond:
            self._generation += 1
            self._cond.notify_all()
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
        if self._http_thread is not None:
            self._http_thread.join(timeout=5.0)
        if self._grpc_server is not None:
            self._grpc_server.stop(grace).wait((grace or 0.0) + 5.0)
            if self._executor is not None:
                self._executor.shutdown(wait=False)
        self._grpc_server, self._http_server, self._http_thread = None, None, None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self._tls_cert is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self._tls_cert, self._tls_key)
        if self._client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self._client_ca)
        return ctx

    @property
    def grpc_port(self) -> int:
        """The bound gRPC port (known after the first `start`)."""
        return _known(self._grpc_port)

    @property
    def http_port(self) -> int:
        """The bound HTTP port (known after the first `start`)."""
        return _known(self._http_port)

    @property
    def grpc_endpoint(self) -> str:
        """The gRPC endpoint for OTLP exporters, e.g. ``"http://127.0.0.1:4317"`` (``https://`` under TLS)."""
        return self._url(self.grpc_port)

    @property
    def http_endpoint(self) -> str:
        """HTTP base URL, e.g. ``"http://127.0.0.1:4318"``; exporters append ``/v1/traces`` and so on."""
        return self._url(self.http_port)

    def _url(self, port: int) -> str:
        scheme = "https" if self._tls_cert else "http"
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self._host, self._host)
        return f"{scheme}://{_bracketed(host)}:{port}"

    def set_failure(self, status: int | grpc.StatusCode | None, *, retry_after_s: float | None = None) -> None:
        """Answer every export with a failure until ``set_failure(None)``.

        Args:
            status: An HTTP status (4xx/5xx; gRPC gets the matching code, e.g. 503 is ``UNAVAILABLE`` and 429 is
                ``RESOURCE_EXHAUSTED``), a `grpc.StatusCode` (HTTP gets the matching status), or None to clear.
            retry_after_s: Throttling hint: HTTP ``Retry-After`` header, and for gRPC a ``google.rpc.RetryInfo``
                both in ``grpc-status-details-bin`` and in the ``google.rpc.retryinfo-bin`` trailer that
                opentelemetry-python's exporter reads.

        Raises:
            ValueError: ``status`` is not an error status.
        """
        failure = None
        if isinstance(status, grpc.StatusCode):
            if status == grpc.StatusCode.OK:
                raise ValueError("set_failure(): grpc.StatusCode.OK is not a failure")
            failure = _Failure(_GRPC_TO_HTTP.get(status, 500), status, "injected failure", retry_after_s)
        elif status is not None:
            if not 400 <= status <= 599:
                raise ValueError(f"set_failure(): status={status!r}: expected an HTTP status in 400..599")
            code = _HTTP_TO_GRPC.get(status, _SC.INVALID_ARGUMENT if status < 500 else _SC.INTERNAL)
            failure = _Failure(status, code, "injected failure", retry_after_s)
        with self._cond:
            self._failure = failure
            self._cond.notify_all()

    def set_delay(self, seconds: float) -> None:
        """Wait ``seconds`` before answering each export (a slow collector); 0 turns it off."""
        with self._cond:
            self._delay = max(0.0, seconds)
            self._cond.notify_all()

    def black_hole(self, enabled: bool = True) -> None:
        """Accept exports but never answer them until turned off (then they get 503/UNAVAILABLE) or stopped."""
        with self._cond:
            self._black_hole = enabled
            self._cond.notify_all()

    def spans(
        self,
        name: str | None = None,
        *,
        attributes: Mapping[str, Any] | None = None,
        resource: Mapping[str, Any] | None = None,
        **attrs: Any,
    ) -> list[ReceivedSpan]:
        """Spans received so far, in arrival order, filtered by name and (resource) attributes.

        Args:
            name: Span name, or None for any.
            attributes: Attributes the span must have, with dotted keys (``{"http.route": "/predict"}``).
            resource: Resource attributes the span must have (``{"service.name": "fraud-scorer"}``).
            **attrs: Shorthand for attributes whose keys are valid Python names.
        """
        return self._select("traces", lambda s: name in (None, s.name), {**(attributes or {}), **attrs}, resource)

    def metric_points(
        self,
        name: str | None = None,
        *,
        attributes: Mapping[str, Any] | None = None,
        resource: Mapping[str, Any] | None = None,
        **attrs: Any,
    ) -> list[ReceivedMetricPoint]:
        """Every metric data point received so far, in arrival order; filters as in `spans`."""
        return self._select("metrics", lambda p: name in (None, p.name), {**(attributes or {}), **attrs}, resource)

    def latest_metric_points(
        self, name: str, *, attributes: Mapping[str, Any] | None = None, resource: Mapping[str, Any] | None = None
    ) -> list[ReceivedMetricPoint]:
        """The newest point of each series of metric ``name``: for cumulative metrics, the current values.

        A series is (``service.name``, ``service.instance.id``, attribute set). For delta metrics this is only
        the last interval.
        """
        latest: dict[tuple[Any, Any, str], ReceivedMetricPoint] = {}
        for p in self.metric_points(name, attributes=attributes, resource=resource):
            series = p.resource.get("service.name"), p.resource.get("service.instance.id")
            key = (*series, repr(sorted(p.attributes.items())))
            if key not in latest or p.time_unix_nano >= latest[key].time_unix_nano:
                latest[key] = p
        return list(latest.values())

    def logs(
        self,
        *,
        body: Any = None,
        attributes: Mapping[str, Any] | None = None,
        resource: Mapping[str, Any] | None = None,
        **attrs: Any,
    ) -> list[ReceivedLog]:
        """Log records received so far, in arrival order, filtered by body (None: any) and (resource) attributes."""
        return self._select("logs", lambda r: body in (None, r.body), {**(attributes or {}), **attrs}, resource)

    def request_count(self, signal: str | None = None, protocol: str | None = None) -> int:
        """Export requests received, whatever the answer, optionally of one signal and/or protocol.

        Args:
            signal: ``"traces"``, ``"metrics"`` or ``"logs"``.
            protocol: ``"grpc"`` or ``"http"``.
        """
        with self._cond:
            return _count(self._requests, signal, protocol)

    def failure_count(self, signal: str | None = None, protocol: str | None = None) -> int:
        """Export requests answered with a failure (injected, black-holed or malformed); filters as above."""
        with self._cond:
            return _count(self._failures, signal, protocol)

    def clear(self) -> None:
        """Forget everything received and reset the request counters; fault settings stay."""
        with self._cond:
            for items in self._store.values():
                items.clear()
            self._requests.clear()
            self._failures.clear()

    def wait_for_span(
        self,
        name: str | None = None,
        *,
        timeout: float = 5.0,
        attributes: Mapping[str, Any] | None = None,
        predicate: Callable[[ReceivedSpan], bool] | None = None,
    ) -> ReceivedSpan:
        """Wait for the first span matching name, attributes and predicate, and return it.

        Raises:
            TimeoutError: None arrived within ``timeout`` seconds; the message lists what did arrive.
        """
        return self.wait_for_spans(1, name=name, timeout=timeout, attributes=attributes, predicate=predicate)[0]

    def wait_for_spans(
        self,
        count: int,
        *,
        name: str | None = None,
        timeout: float = 5.0,
        attributes: Mapping[str, Any] | None = None,
        predicate: Callable[[ReceivedSpan], bool] | None = None,
    ) -> list[ReceivedSpan]:
        """Wait until at least ``count`` spans match, and return all that match, in arrival order.

        Raises:
            TimeoutError: Fewer arrived within ``timeout`` seconds; the message lists what did arrive.
        """

        def find() -> list[ReceivedSpan] | None:
            found = [s for s in self.spans(name, attributes=attributes) if predicate is None or predicate(s)]
            return found if len(found) >= count else None

        what = f"span with {_criteria(f'name={name!r}', attributes, predicate)}"
        return self._wait(find, timeout, what if count == 1 else f"{count} spans (each a {what})", "traces")

    def wait_for_metric(
        self,
        name: str,
        *,
        timeout: float = 5.0,
        attributes: Mapping[str, Any] | None = None,
        predicate: Callable[[ReceivedMetricPoint], bool] | None = None,
    ) -> ReceivedMetricPoint:
        """Wait for a point of metric ``name`` matching attributes and predicate; return the newest such point.

        Raises:
            TimeoutError: None arrived within ``timeout`` seconds; the message lists the metrics that did arrive.
        """

        def find() -> ReceivedMetricPoint | None:
            points = reversed(self.metric_points(name, attributes=attributes))
            return next((p for p in points if predicate is None or predicate(p)), None)

        what = f"metric point with {_criteria(f'name={name!r}', attributes, predicate)}"
        return self._wait(find, timeout, what, "metrics")

    def wait_for_log(
        self,
        *,
        body: Any = None,
        timeout: float = 5.0,
        attributes: Mapping[str, Any] | None = None,
        predicate: Callable[[ReceivedLog], bool] | None = None,
    ) -> ReceivedLog:
        """Wait for the first log record matching body (None: any), attributes and predicate, and return it.

        Raises:
            TimeoutError: None arrived within ``timeout`` seconds; the message lists the bodies that did arrive.
        """

        def find() -> ReceivedLog | None:
            records = self.logs(body=body, attributes=attributes)
            return next((r for r in records if predicate is None or predicate(r)), None)

        return self._wait(find, timeout, f"log with {_criteria(f'body={body!r}', attributes, predicate)}", "logs")

    def wait_for_requests(
        self,
        count: int,
        *,
        signal: str | None = None,
        protocol: str | None = None,
        failed: bool = False,
        timeout: float = 5.0,
    ) -> int:
        """Wait until at least ``count`` export requests arrived (any outcome; parked ones included).

        Args:
            count: How many requests to wait for.
            signal: Only count ``"traces"``, ``"metrics"`` or ``"logs"``.
            protocol: Only count ``"grpc"`` or ``"http"``.
            failed: Only count requests answered with a failure (see `failure_count`), e.g. exporter retries.
            timeout: Seconds to wait.

        Returns:
            The count at that moment.

        Raises:
            TimeoutError: Fewer arrived within ``timeout`` seconds.
        """

        def find() -> int | None:
            n = _count(self._failures if failed else self._requests, signal, protocol)
            return n if n >= count else None

        what = f"{count} {'failed ' if failed else ''}requests with signal={signal!r}, protocol={protocol!r}"
        return self._wait(find, timeout, what, None)

    def _select(
        self, signal: str, keep: Callable[[Any], bool], wanted: Mapping[str, Any], resource: Mapping[str, Any] | None
    ) -> list[Any]:
        with self._cond:
            return [
                i
                for i in self._store[signal]
                if keep(i) and _matches(i.attributes, wanted) and _matches(i.resource, resource)
            ]

    def _wait(self, find: Callable[[], _T | None], timeout: float, what: str, signal: str | None) -> _T:
        deadline = time.monotonic() + timeout
        with self._cond:
            while (found := find()) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"No {what} received within {timeout}s; received: {self._summary(signal)}")
                self._cond.wait(remaining)
            return found

    def _summary(self, signal: str | None) -> str:
        if signal is None:
            return f"{_per_key(self._requests)}, failed: {_per_key(self._failures)}"
        labels = Counter(repr(i.body)[:60] if signal == "logs" else repr(i.name) for i in self._store[signal])
        shown = [label if n == 1 else f"{label} x{n}" for label, n in list(labels.items())[:20]]
        return f"[{', '.join(shown)}{', ...' if len(labels) > 20 else ''}]"

    def _handle(self, signal: str, protocol: str, request: Any, gone: threading.Event) -> _Failure | None:
        """Apply the fault settings, then store; returns the failure to answer with, if any."""
        with self._cond:
            self._requests[(signal, protocol)] += 1
            self._cond.notify_all()
            generation = self._generation

            def released() -> bool:
                return self._generation != generation or gone.is_set()

            if self._delay:
                self._cond.wait_for(released, timeout=self._delay)
            failure = self._failure
            if self._black_hole:
                self._cond.wait_for(lambda: not self._black_hole or released())
                failure = _Failure(503, _SC.UNAVAILABLE, "black hole")
            if failure is not None:
                self._failures[(signal, protocol)] += 1
                return failure
        items = _DECODERS[signal](request, protocol)
        with self._cond:
            self._store[signal].extend(items)
            self._cond.notify_all()
        if self.on_receive is not None and items:
            try:
                self.on_receive(signal, items)
            except Exception:  # a broken tail printer must not break the receiver
                _logger.debug("OtlpReceiver on_receive callback failed", exc_info=True)
        return None

    def _malformed(self, signal: str, protocol: str) -> None:
        with self._cond:
            self._requests[(signal, protocol)] += 1
            self._failures[(signal, protocol)] += 1
            self._cond.notify_all()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _export_grpc(self, signal: str, request: Any, context: Any) -> Any:
        gone = threading.Event()

        def on_done() -> None:  # the client cancelled or its deadline passed: free the handler thread
            gone.set()
            self._wake()

        context.add_callback(on_done)
        failure = self._handle(signal, "grpc", request, gone)
        if failure is not None:
            metadata: list[tuple[str, bytes]] = [("grpc-status-details-bin", failure.status().SerializeToString())]
            if failure.retry_after_s is not None:
                metadata.append(("google.rpc.retryinfo-bin", failure.retry_info().SerializeToString()))
            context.set_trailing_metadata(metadata)
            context.abort(failure.grpc_code, failure.message)
        return _SIGNALS[signal][1]()


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _known(port: int) -> int:
    if not port:
        raise RuntimeError("OtlpReceiver: the port is chosen on the first start(); start the receiver first")
    return port


def _count(counter: Counter[tuple[str, str]], signal: str | None, protocol: str | None) -> int:
    if signal is not None and signal not in _SIGNALS:
        raise ValueError(f"signal={signal!r}: expected one of {', '.join(map(repr, _SIGNALS))}")
    return sum(n for (s, p), n in counter.items() if signal in (None, s) and protocol in (None, p))


def _per_key(counter: Counter[tuple[str, str]]) -> dict[str, int]:
    return {f"{s}/{p}": n for (s, p), n in sorted(counter.items())}


def _criteria(first: str, attributes: Mapping[str, Any] | None, predicate: object) -> str:
    parts = [first]
    if attributes:
        parts.append(f"attributes={dict(attributes)!r}")
    if predicate is not None:
        parts.append("matching predicate")
    return ", ".join(parts)


class _GrpcExport:
    signal = ""

    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:  # gRPC method name
        return self._receiver._export_grpc(self.signal, request, context)


class _TraceServicer(_GrpcExport, trace_service_pb2_grpc.TraceServiceServicer):
    signal = "traces"


class _MetricsServicer(_GrpcExport, metrics_service_pb2_grpc.MetricsServiceServicer):
    signal = "metrics"


class _LogsServicer(_GrpcExport, logs_service_pb2_grpc.LogsServiceServicer):
    signal = "logs"


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # parked handler threads must not block stop()

    def __init__(self, address: tuple[str, int], receiver: OtlpReceiver, tls: ssl.SSLContext | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.receiver = receiver
        super().__init__(address, _HttpHandler)
        if tls is not None:
            # Handshake in the handler thread, not in the accept loop, so one stuck client cannot stall it.
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        _logger.debug("OtlpReceiver: HTTP connection from %s failed", client_address, exc_info=True)


class _HttpHandler(BaseHTTPRequestHandler):
    server: _HttpServer
    timeout = 30  # idle or stuck connections are dropped eventually

    def setup(self) -> None:
        super().setup()
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        _logger.debug("OtlpReceiver HTTP: " + format, *args)  # noqa: G003

    def do_POST(self) -> None:
        receiver = self.server.receiver
        signal = self.path.split("?")[0].removeprefix("/v1/")
        if signal not in _SIGNALS or not self.path.startswith("/v1/"):
            self._reply(404, b"unknown OTLP path", "text/plain")
            return
        is_json = (self.headers.get("Content-Type") or "").startswith("application/json")
        try:
            request = self._parse(signal, is_json)
        except Exception as exc:  # any malformed payload is the client's error
            receiver._malformed(signal, "http")
            self._fail(_Failure(400, _SC.INVALID_ARGUMENT, f"cannot decode request: {exc}"), is_json)
            return
        failure = receiver._handle(signal, "http", request, threading.Event())
        if failure is not None:
            self._fail(failure, is_json)
            return
        response = _SIGNALS[signal][1]()
        if is_json:
            self._reply(200, json_format.MessageToJson(response).encode(), "application/json")
        else:
            self._reply(200, response.SerializeToString(), "application/x-protobuf")

    def _parse(self, signal: str, is_json: bool) -> Any:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise ValueError("chunked request bodies are not supported; send Content-Length")
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= _MAX_BODY:
            raise ValueError(f"Content-Length {length} out of range")
        body = self.rfile.read(length)
        encoding = (self.headers.get("Content-Encoding") or "identity").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding != "identity":
            raise ValueError(f"unsupported Content-Encoding {encoding!r}")
        request = _SIGNALS[signal][0]()
        if is_json:
            json_format.ParseDict(_hex_ids_to_base64(json.loads(body)), request, ignore_unknown_fields=True)
        else:
            request.ParseFromString(body)
        return request

    def _fail(self, failure: _Failure, is_json: bool) -> None:
        headers = {}
        if failure.retry_after_s is not None:
            headers["Retry-After"] = str(math.ceil(failure.retry_after_s))
        status = failure.status()
        if is_json:
            self._reply(failure.http_status, json_format.MessageToJson(status).encode(), "application/json", headers)
        else:
            self._reply(failure.http_status, status.SerializeToString(), "application/x-protobuf", headers)

    def _reply(self, code: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (black hole, delay): nothing left to tell it
            _logger.debug("OtlpReceiver: HTTP client went away before the answer")
