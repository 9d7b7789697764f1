"""OtlpReceiver over the real wire: the SDK's own OTLP exporters send, the receiver decodes."""

from __future__ import annotations

import datetime
import gzip
import ipaddress
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped,unused-ignore]
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from obskit._receiver import OtlpReceiver, ReceivedSpan

RESOURCE = Resource.create({"service.name": "fraud-scorer", "service.instance.id": "worker-1"})


@pytest.fixture
def rx() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


def finished_span(name: str = "probe", **attributes: Any) -> ReadableSpan:
    """Build one finished SDK span without exporting it anywhere."""
    captured: list[ReadableSpan] = []

    class Keep(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            captured.extend(spans)
            return SpanExportResult.SUCCESS

    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(Keep()))
    provider.get_tracer("test").start_span(name, attributes=attributes).end()
    provider.shutdown()
    return captured[0]


def send(exporter: SpanExporter, span: ReadableSpan) -> SpanExportResult:
    try:
        return exporter.export([span])
    finally:
        exporter.shutdown()


def test_grpc_spans_are_decoded(rx: OtlpReceiver) -> None:
    """A parent/child trace sent over gRPC arrives with ids, kinds, status, events, attributes and resource."""
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(GrpcSpanExporter(endpoint=rx.grpc_endpoint, insecure=True)))
    tracer = provider.get_tracer("obskit.test")
    route: dict[str, Any] = {"http.route": "/predict", "n": 3, "ratio": 0.5, "ok": True, "tags": ("a", "b")}
    with (
        tracer.start_as_current_span("POST /predict", kind=SpanKind.SERVER, attributes=route) as parent,
        tracer.start_as_current_span("inference fraud-xgb") as child,
    ):
        child.add_event("batch", {"size": 8})
        child.set_status(StatusCode.ERROR, "boom")
    provider.shutdown()

    server = rx.wait_for_span("POST /predict")
    inner = rx.wait_for_span("inference fraud-xgb")
    assert server.trace_id == format(parent.get_span_context().trace_id, "032x")
    assert server.span_id == format(parent.get_span_context().span_id, "016x")
    assert server.parent_span_id == ""
    assert server.kind == "SERVER"
    assert server.status_code == "UNSET"
    assert server.attributes == {"http.route": "/predict", "n": 3, "ratio": 0.5, "ok": True, "tags": ["a", "b"]}
    assert server.resource["service.name"] == "fraud-scorer"
    assert server.resource["service.instance.id"] == "worker-1"
    assert server.scope == "obskit.test"
    assert server.protocol == "grpc"
    assert inner.trace_id == server.trace_id
    assert inner.parent_span_id == server.span_id
    assert inner.span_id == format(child.get_span_context().span_id, "016x")
    assert (inner.kind, inner.status_code, inner.status_message) == ("INTERNAL", "ERROR", "boom")
    assert inner.events == [("batch", {"size": 8})]
    assert 0 <= inner.duration_s <= server.duration_s
    assert rx.spans(attributes={"http.route": "/predict"}) == [server]
    assert rx.spans(n=3, resource={"service.name": "fraud-scorer"}) == [server]
    assert rx.spans(n=4) == []
    assert rx.request_count("traces", "grpc") == 2
    assert rx.request_count(protocol="http") == 0


def test_http_spans_with_gzip(rx: OtlpReceiver) -> None:
    """The HTTP/protobuf exporter with gzip compression is decoded and tagged protocol="http"."""
    exporter = HttpSpanExporter(endpoint=rx.http_endpoint + "/v1/traces", compression=Compression.Gzip)
    span = finished_span("GET /health", **{"http.request.method": "GET"})

    assert send(exporter, span) == SpanExportResult.SUCCESS

    [received] = rx.wait_for_spans(1, name="GET /health")
    assert received.protocol == "http"
    assert received.attributes == {"http.request.method": "GET"}
    assert received.span_id == format(span.context.span_id, "016x")
    assert rx.request_count("traces", "http") == 1


def test_http_json_with_hex_ids(rx: OtlpReceiver) -> None:
    """OTLP/JSON (hex ids, gzip body) is accepted and answered in JSON."""
    payload = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "curl"},
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "parentSpanId": "eee19b7ec3c1b173",
                                "name": "json span",
                                "kind": 3,
                                "startTimeUnixNano": "500000000",
                                "endTimeUnixNano": "3000000000",
                                "attributes": [{"key": "retries", "value": {"intValue": "2"}}],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    request = urllib.request.Request(
        rx.http_endpoint + "/v1/traces",
        data=gzip.compress(json.dumps(payload).encode()),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert json.loads(response.read()) == {}

    span = rx.wait_for_span("json span")
    assert (span.trace_id, span.span_id, span.parent_span_id) == (
        "5b8efff798038103d269b633813fc60c",
        "eee19b7ec3c1b174",
        "eee19b7ec3c1b173",
    )
    assert (span.kind, span.attributes, span.resource, span.scope) == (
        "CLIENT",
        {"retries": 2},
        {"service.name": "json-svc"},
        "curl",
    )
    assert span.duration_s == pytest.approx(2.5, abs=1e-6)


def test_malformed_http_body_is_rejected(rx: OtlpReceiver) -> None:
    """A body that is not OTLP gets 400 with a google.rpc.Status body, is counted as failed, and stores nothing."""
    request = urllib.request.Request(
        rx.http_endpoint + "/v1/logs", data=b"\xff\xfe not protobuf", headers={"Content-Type": "application/x-protobuf"}
    )
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(request, timeout=5)
    assert excinfo.value.code == 400
    status = status_pb2.Status.FromString(excinfo.value.read())
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "cannot decode request" in status.message
    assert (rx.request_count("logs", "http"), rx.failure_count("logs", "http")) == (1, 1)
    assert rx.logs() == []


def test_metrics_over_grpc_with_exemplars(rx: OtlpReceiver) -> None:
    """Counter and histogram points arrive with kind, temporality, buckets and a trace-linked exemplar."""
    reader = PeriodicExportingMetricReader(
        GrpcMetricExporter(endpoint=rx.grpc_endpoint, insecure=True), export_interval_millis=3_600_000
    )
    meters = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    meter = meters.get_meter("obskit.test")
    requests = meter.create_counter("obskit.test.requests", unit="{request}", description="Requests served.")
    latency = meter.create_histogram(
        "obskit.test.duration", unit="s", explicit_bucket_boundaries_advisory=[0.1, 1.0, 10.0]
    )
    tracer = TracerProvider(resource=RESOURCE).get_tracer("t")
    with tracer.start_as_current_span("traced") as span:
        latency.record(0.5, {"model.stage": "inference"})
    latency.record(5.0, {"model.stage": "inference"})
    requests.add(3, {"http.route": "/predict"})
    meters.shutdown()

    counter = rx.wait_for_metric("obskit.test.requests", attributes={"http.route": "/predict"})
    assert (counter.kind, counter.is_monotonic, counter.temporality) == ("sum", True, "CUMULATIVE")
    assert (counter.value, counter.unit, counter.description) == (3, "{request}", "Requests served.")
    assert counter.resource["service.instance.id"] == "worker-1"
    assert (counter.scope, counter.protocol) == ("obskit.test", "grpc")
    histogram = rx.wait_for_metric("obskit.test.duration")
    assert histogram.kind == "histogram"
    assert histogram.attributes == {"model.stage": "inference"}
    assert (histogram.count, histogram.sum) == (2, 5.5)
    assert histogram.explicit_bounds == (0.1, 1.0, 10.0)
    assert histogram.bucket_counts == (0, 1, 1, 0)
    assert histogram.value is None
    assert histogram.time_unix_nano >= histogram.start_time_unix_nano > 0
    traced = [e for e in histogram.exemplars if e["trace_id"]]
    assert [(e["trace_id"], e["span_id"], e["value"]) for e in traced] == [
        (format(span.get_span_context().trace_id, "032x"), format(span.get_span_context().span_id, "016x"), 0.5)
    ]


def test_latest_metric_points_over_http(rx: OtlpReceiver) -> None:
    """Two cumulative exports of one series: latest_metric_points returns only the newer total."""
    reader = PeriodicExportingMetricReader(
        HttpMetricExporter(endpoint=rx.http_endpoint + "/v1/metrics"), export_interval_millis=3_600_000
    )
    meters = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    counter = meters.get_meter("m").create_counter("obskit.test.calls")
    counter.add(1, {"model.name": "a"})
    assert meters.force_flush()
    rx.wait_for_metric("obskit.test.calls")
    counter.add(2, {"model.name": "a"})
    counter.add(5, {"model.name": "b"})
    meters.shutdown()

    rx.wait_for_metric("obskit.test.calls", attributes={"model.name": "b"})
    assert [p.value for p in rx.metric_points("obskit.test.calls", attributes={"model.name": "a"})] == [1, 3]
    latest = rx.latest_metric_points("obskit.test.calls")
    assert sorted((p.attributes["model.name"], p.value, p.protocol) for p in latest) == [
        ("a", 3, "http"),
        ("b", 5, "http"),
    ]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_logs_are_decoded(rx: OtlpReceiver, protocol: str) -> None:
    """A structured log record emitted inside a span keeps its body, severity and trace context."""
    exporter = (
        GrpcLogExporter(endpoint=rx.grpc_endpoint, insecure=True)
        if protocol == "grpc"
        else HttpLogExporter(endpoint=rx.http_endpoint + "/v1/logs")
    )
    loggers = LoggerProvider(resource=RESOURCE)
    loggers.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    tracer = TracerProvider(resource=RESOURCE).get_tracer("t")
    with tracer.start_as_current_span("request") as span:
        loggers.get_logger("obskit.test").emit(
            LogRecord(
                body={"event": "scored", "scores": [0.1, 0.9]},
                severity_text="WARN",
                severity_number=SeverityNumber.WARN,
                attributes={"model.name": "fraud-xgb"},
            )
        )
    loggers.shutdown()

    record = rx.wait_for_log(body={"event": "scored", "scores": [0.1, 0.9]})
    assert (record.severity_text, record.severity_number) == ("WARN", SeverityNumber.WARN.value)
    assert record.trace_id == format(span.get_span_context().trace_id, "032x")
    assert record.span_id == format(span.get_span_context().span_id, "016x")
    assert record.attributes == {"model.name": "fraud-xgb"}
    assert (record.scope, record.protocol, record.resource["service.name"]) == ("obskit.test", protocol, "fraud-scorer")
    assert record.time_unix_nano > 0
    assert rx.logs(attributes={"model.name": "other"}) == []


def test_timeout_message_lists_what_arrived(rx: OtlpReceiver) -> None:
    """A wait that times out says what it waited for and what did arrive."""
    exporter = GrpcSpanExporter(endpoint=rx.grpc_endpoint, insecure=True)
    assert send(exporter, finished_span("present")) == SpanExportResult.SUCCESS
    rx.wait_for_span("present")

    with pytest.raises(TimeoutError) as excinfo:
        rx.wait_for_span("missing", timeout=0.2)
    assert str(excinfo.value) == "No span with name='missing' received within 0.2s; received: ['present']"
    with pytest.raises(TimeoutError, match=r"attributes=\{'http.route': '/x'\}, matching predicate received"):
        rx.wait_for_span("present", timeout=0.01, attributes={"http.route": "/x"}, predicate=lambda s: True)
    with pytest.raises(TimeoutError, match=r"^No metric point with name='m' received within 0.01s; received: \[\]$"):
        rx.wait_for_metric("m", timeout=0.01)
    with pytest.raises(TimeoutError, match=r"^No log with body='x' received within 0.01s; received: \[\]$"):
        rx.wait_for_log(body="x", timeout=0.01)


def test_restart_on_the_same_ports(rx: OtlpReceiver) -> None:
    """After stop() and start() the receiver listens on the same ports and keeps what it had received."""
    ports = (rx.grpc_port, rx.http_port)
    exporter = GrpcSpanExporter(endpoint=rx.grpc_endpoint, insecure=True, timeout=5)
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.get_tracer("t").start_span("before").end()
    rx.wait_for_span("before")

    rx.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(rx.http_endpoint + "/v1/traces", data=b"", timeout=5)
    rx.start()

    assert (rx.grpc_port, rx.http_port) == ports
    provider.get_tracer("t").start_span("after").end()
    provider.shutdown()
    assert [s.name for s in rx.wait_for_spans(2)] == ["before", "after"]
    http = HttpSpanExporter(endpoint=rx.http_endpoint + "/v1/traces")
    assert send(http, finished_span("after, over http")) == SpanExportResult.SUCCESS


@pytest.mark.parametrize(
    ("make_exporter", "failure"),
    [
        (lambda rx: GrpcSpanExporter(endpoint=rx.grpc_endpoint, insecure=True, timeout=5), 400),
        (lambda rx: GrpcSpanExporter(endpoint=rx.grpc_endpoint, insecure=True, timeout=5), grpc.StatusCode.INTERNAL),
        (lambda rx: HttpSpanExporter(endpoint=rx.http_endpoint + "/v1/traces", timeout=5), 400),
        (lambda rx: HttpSpanExporter(endpoint=rx.http_endpoint + "/v1/traces", timeout=5), grpc.StatusCode.NOT_FOUND),
    ],
    ids=["grpc-400", "grpc-code", "http-400", "http-code"],
)
def test_injected_failure(rx: OtlpReceiver, make_exporter: Any, failure: Any) -> None:
    """With set_failure the exporter gets a non-retryable failure and nothing is stored; clearing it recovers."""
    rx.set_failure(failure)
    assert send(make_exporter(rx), finished_span("rejected")) == SpanExportResult.FAILURE
    assert rx.failure_count("traces") == rx.request_count("traces") == 1
    assert rx.spans() == []

    rx.set_failure(None)
    assert send(make_exporter(rx), finished_span("accepted")) == SpanExportResult.SUCCESS
    assert [s.name for s in rx.spans()] == ["accepted"]
    assert rx.failure_count() == 1


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_retry_after_is_honoured_by_the_exporter(rx: OtlpReceiver, protocol: str) -> None:
    """503 with a 30 s retry hint beyond the exporter's 5 s deadline: exactly one attempt, then FAILURE."""
    rx.set_failure(503, retry_after_s=30)
    exporter: SpanExporter = (
        GrpcSpanExporter(endpoint=rx.grpc_endpoint, insecure=True, timeout=5)
        if protocol == "grpc"
        else HttpSpanExporter(endpoint=rx.http_endpoint + "/v1/traces", timeout=5)
    )
    started = time.monotonic()
    assert send(exporter, finished_span()) == SpanExportResult.FAILURE
    # Without the hint the exporter would have retried after ~1 s, within its deadline.
    assert rx.failure_count("traces", protocol) == 1
    assert time.monotonic() - started < 4


def test_grpc_failure_details() -> None:
    """429 maps to RESOURCE_EXHAUSTED, with RetryInfo in grpc-status-details-bin and google.rpc.retryinfo-bin."""
    with OtlpReceiver() as rx, grpc.insecure_channel(f"127.0.0.1:{rx.grpc_port}") as channel:
        rx.set_failure(429, retry_after_s=2.5)
        stub: Any = trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call,unused-ignore]
        with pytest.raises(grpc.RpcError) as excinfo:
            stub.Export(trace_service_pb2.ExportTraceServiceRequest(), timeout=5)
    error: Any = excinfo.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(error.trailing_metadata())
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert (info.retry_delay.seconds, info.retry_delay.nanos) == (2, 500_000_000)
    assert error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"]) == info


def test_http_failure_has_retry_after_header(rx: OtlpReceiver) -> None:
    """HTTP failures carry Retry-After (whole seconds, rounded up) and a google.rpc.Status body."""
    rx.set_failure(grpc.StatusCode.UNAVAILABLE, retry_after_s=1.2)
    request = urllib.request.Request(rx.http_endpoint + "/v1/metrics", data=b"")
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(request, timeout=5)
    assert (excinfo.value.code, excinfo.value.headers["Retry-After"]) == (503, "2")
    assert status_pb2.Status.FromString(excinfo.value.read()).code == grpc.StatusCode.UNAVAILABLE.value[0]
    with pytest.raises(ValueError, match=r"expected an HTTP status in 400\.\.599"):
        rx.set_failure(200)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_black_hole_times_the_exporter_out(rx: OtlpReceiver, protocol: str) -> None:
    """A black-holed export hangs until the exporter's own timeout, stores nothing, and recovery works."""
    exporter: SpanExporter = (
        GrpcSpanExporter(endpoint=rx.grpc_endpoint, insecure=True, timeout=0.5)
        if protocol == "grpc"
        else HttpSpanExporter(endpoint=rx.http_endpoint + "/v1/traces", timeout=0.5)
    )
    rx.black_hole(True)
    started = time.monotonic()
    assert exporter.export([finished_span("lost")]) == SpanExportResult.FAILURE
    assert 0.4 < time.monotonic() - started < 3
    assert rx.request_count("traces", protocol) >= 1

    rx.black_hole(False)
    assert send(exporter, finished_span("kept")) == SpanExportResult.SUCCESS
    assert [s.name for s in rx.spans()] == ["kept"]


def test_black_hole_frees_grpc_handlers_when_the_client_gives_up(rx: OtlpReceiver) -> None:
    """A parked gRPC call is answered (and counted as failed) once the client's deadline passes, not held forever."""
    rx.black_hole(True)
    exporter = GrpcSpanExporter(endpoint=rx.grpc_endpoint, insecure=True, timeout=0.3)
    assert send(exporter, finished_span("lost")) == SpanExportResult.FAILURE
    assert rx.wait_for_requests(1, protocol="grpc", failed=True, timeout=3) == 1
    with pytest.raises(TimeoutError, match=r"^No 2 failed requests with signal='logs', protocol=None received within"):
        rx.wait_for_requests(2, signal="logs", failed=True, timeout=0.01)
    assert rx.spans() == []


def test_stop_releases_black_holed_requests() -> None:
    """stop() returns promptly while requests are parked in the black hole; the client sees the connection end."""
    rx = OtlpReceiver().start()
    rx.black_hole(True)
    outcome: list[object] = []

    def post() -> None:
        try:
            urllib.request.urlopen(rx.http_endpoint + "/v1/traces", data=b"", timeout=30)
        except urllib.error.HTTPError as exc:
            outcome.append(exc.code)
        except OSError as exc:
            outcome.append(type(exc))

    client = threading.Thread(target=post)
    client.start()
    rx.wait_for_requests(1, signal="traces", protocol="http")
    started = time.monotonic()
    rx.stop()
    client.join(timeout=10)

    assert time.monotonic() - started < 3
    assert not client.is_alive()
    assert outcome == [503]
    assert rx.spans() == []
    assert rx.failure_count("traces", "http") == 1


def test_delay_slows_answers_but_keeps_data(rx: OtlpReceiver) -> None:
    """With set_delay an export is answered no sooner than the delay, and still stored."""
    rx.set_delay(0.3)
    started = time.monotonic()
    assert send(HttpSpanExporter(endpoint=rx.http_endpoint + "/v1/traces"), finished_span("slow")) == (
        SpanExportResult.SUCCESS
    )
    assert time.monotonic() - started >= 0.3
    assert [s.name for s in rx.spans()] == ["slow"]


def test_on_receive_callback_and_clear() -> None:
    """on_receive sees decoded items per export; an exception in it is swallowed; clear() forgets everything."""
    seen: list[tuple[str, list[str]]] = []

    def callback(signal: str, items: list[object]) -> None:
        seen.append((signal, [item.name for item in items if isinstance(item, ReceivedSpan)]))
        raise RuntimeError("broken printer")

    with OtlpReceiver(on_receive=callback) as rx:
        exporter = GrpcSpanExporter(endpoint=rx.grpc_endpoint, insecure=True)
        assert send(exporter, finished_span("tailed")) == SpanExportResult.SUCCESS
        assert seen == [("traces", ["tailed"])]
        assert [s.name for s in rx.spans()] == ["tailed"]
        rx.clear()
        assert (rx.spans(), rx.request_count()) == ([], 0)


def test_ports_are_unknown_before_start_and_arguments_are_checked() -> None:
    """Reading a port before the first start raises; half a TLS configuration is rejected."""
    rx = OtlpReceiver()
    with pytest.raises(RuntimeError, match="start the receiver first"):
        _ = rx.grpc_endpoint
    with pytest.raises(ValueError, match="tls_cert and tls_key must be given together"):
        OtlpReceiver(tls_cert="cert.pem")
    with pytest.raises(ValueError, match="client_ca"):
        OtlpReceiver(client_ca="ca.pem")
    with pytest.raises(ValueError, match="signal='spans'"):
        rx.request_count("spans")


# -- TLS -----------------------------------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files."""
    # requests lets these variables override a session's own CA file (psf/requests#3829), i.e. the
    # exporter's certificate_file, so they must not leak in from the developer's environment.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def issue(cn: str, key: Any, issuer: Any, issuer_key: Any, *, ca: bool = False, **extra: Any) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            # Key identifiers and key usage keep Python 3.13's VERIFY_X509_STRICT satisfied.
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        )
        if ca:
            usage = dict.fromkeys(
                ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement"), False
            )
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                    **usage,
                ),
                critical=True,
            )
        if "san" in extra:
            builder = builder.add_extension(x509.SubjectAlternativeName(extra["san"]), critical=False)
        if "usage" in extra:
            builder = builder.add_extension(x509.ExtendedKeyUsage([extra["usage"]]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    files: dict[str, Path] = {}

    def save(name: str, cert: Any, key: Any) -> None:
        files[name + "_cert"] = tmp_path / f"{name}.crt"
        files[name + "_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[name + "_key"] = tmp_path / f"{name}.key"
        files[name + "_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "obskit test CA")])
    save("ca", issue("obskit test CA", ca_key, ca_name, ca_key, ca=True), ca_key)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    save(
        "server",
        issue("localhost", server_key, ca_name, ca_key, san=san, usage=ExtendedKeyUsageOID.SERVER_AUTH),
        server_key,
    )
    save("client", issue("client", client_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH), client_key)
    return files


def test_tls_both_protocols(pki: dict[str, Path]) -> None:
    """With tls_cert/tls_key both servers speak TLS on https:// endpoints the exporters can verify."""
    with OtlpReceiver(tls_cert=str(pki["server_cert"]), tls_key=str(pki["server_key"])) as rx:
        assert rx.grpc_endpoint.startswith("https://127.0.0.1:")
        assert rx.http_endpoint.startswith("https://127.0.0.1:")
        creds = grpc.ssl_channel_credentials(root_certificates=pki["ca_cert"].read_bytes())
        grpc_exporter = GrpcSpanExporter(endpoint=rx.grpc_endpoint, credentials=creds)
        http_exporter = HttpSpanExporter(endpoint=rx.http_endpoint + "/v1/traces", certificate_file=str(pki["ca_cert"]))
        assert send(grpc_exporter, finished_span("over grpc+tls")) == SpanExportResult.SUCCESS
        assert send(http_exporter, finished_span("over https")) == SpanExportResult.SUCCESS
        assert sorted((s.name, s.protocol) for s in rx.spans()) == [("over grpc+tls", "grpc"), ("over https", "http")]


def test_mtls_requires_a_client_certificate(pki: dict[str, Path]) -> None:
    """With client_ca a client certificate is required: with one exports succeed, without one they fail."""
    ca, cert, key = (pki["ca_cert"], pki["client_cert"], pki["client_key"])
    with OtlpReceiver(tls_cert=str(pki["server_cert"]), tls_key=str(pki["server_key"]), client_ca=str(ca)) as rx:
        traces = rx.http_endpoint + "/v1/traces"
        with_cert = grpc.ssl_channel_credentials(ca.read_bytes(), key.read_bytes(), cert.read_bytes())
        assert (
            send(GrpcSpanExporter(endpoint=rx.grpc_endpoint, credentials=with_cert), finished_span("grpc mtls"))
            == SpanExportResult.SUCCESS
        )
        assert (
            send(
                HttpSpanExporter(
                    endpoint=traces,
                    certificate_file=str(ca),
                    client_key_file=str(key),
                    client_certificate_file=str(cert),
                ),
                finished_span("http mtls"),
            )
            == SpanExportResult.SUCCESS
        )

        without = grpc.ssl_channel_credentials(ca.read_bytes())
        assert (
            send(
                GrpcSpanExporter(endpoint=rx.grpc_endpoint, credentials=without, timeout=1), finished_span("anonymous")
            )
            == SpanExportResult.FAILURE
        )
        assert (
            send(HttpSpanExporter(endpoint=traces, certificate_file=str(ca), timeout=1), finished_span("anonymous"))
            == SpanExportResult.FAILURE
        )
        assert sorted(s.name for s in rx.spans()) == ["grpc mtls", "http mtls"]
