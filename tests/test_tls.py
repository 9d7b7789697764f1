"""TLS and mTLS export through OTEL_EXPORTER_OTLP_CERTIFICATE / _CLIENT_KEY / _CLIENT_CERTIFICATE."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry import trace

import obskit
from obskit import _config, _exporters
from obskit.testing import OtlpReceiver


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _key() -> object:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: object, path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def _cert(subject: str, key: object, issuer: tuple[str, object] | None, *, ca: bool, server: bool = False) -> object:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]


def _write_cert(cert: object, path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files."""
    pytest.importorskip("cryptography")
    root = tmp_path_factory.mktemp("pki")
    paths = Pki(
        *(root / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key", "other.pem"))
    )
    ca_key, server_key, client_key, other_key = _key(), _key(), _key(), _key()
    _write_cert(_cert("obskit test CA", ca_key, None, ca=True), paths.ca)
    _write_cert(_cert("127.0.0.1", server_key, ("obskit test CA", ca_key), ca=False, server=True), paths.server_cert)
    _write_cert(_cert("obskit client", client_key, ("obskit test CA", ca_key), ca=False), paths.client_cert)
    _write_cert(_cert("some other CA", other_key, None, ca=True), paths.other_ca)
    _write_key(server_key, paths.server_key)
    _write_key(client_key, paths.client_key)
    return paths


@pytest.fixture(params=["grpc", "http/protobuf"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def tls_rx(pki: Pki) -> Iterator[OtlpReceiver]:
    with OtlpReceiver(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key)) as rx:
        yield rx


@pytest.fixture
def mtls_rx(pki: Pki) -> Iterator[OtlpReceiver]:
    with OtlpReceiver(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key), client_ca=str(pki.ca)) as rx:
        yield rx


def _init(rx: OtlpReceiver, protocol: str) -> obskit.Handle:
    endpoint = rx.grpc_endpoint if protocol == "grpc" else rx.http_endpoint
    assert endpoint.startswith("https://")
    return obskit.init(
        endpoint=endpoint, protocol=protocol, system_metrics=False, metrics_exporter="none", logs_exporter="none"
    )


def test_tls_with_the_collector_ca(tls_rx: OtlpReceiver, pki: Pki, protocol: str, monkeypatch: pytest.MonkeyPatch):
    """OTEL_EXPORTER_OTLP_CERTIFICATE: the collector's self-signed chain is trusted, spans arrive."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(pki.ca))
    handle = _init(tls_rx, protocol)
    trace.get_tracer("t").start_span("over tls").end()
    assert handle.force_flush(10)
    assert tls_rx.wait_for_span("over tls", timeout=5).protocol == ("grpc" if protocol == "grpc" else "http")
    assert handle.shutdown(5)


def test_mtls_with_a_client_certificate(
    mtls_rx: OtlpReceiver, pki: Pki, protocol: str, monkeypatch: pytest.MonkeyPatch
):
    """_CLIENT_KEY and _CLIENT_CERTIFICATE: a collector that requires client certificates accepts the export."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(pki.ca))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", str(pki.client_key))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", str(pki.client_cert))
    handle = _init(mtls_rx, protocol)
    trace.get_tracer("t").start_span("over mtls").end()
    assert handle.force_flush(10)
    mtls_rx.wait_for_span("over mtls", timeout=5)
    assert handle.shutdown(5)


def test_mtls_without_a_client_certificate_keeps_the_data(
    mtls_rx: OtlpReceiver, pki: Pki, protocol: str, monkeypatch: pytest.MonkeyPatch
):
    """No client certificate: the handshake fails, nothing arrives, the spans wait and are counted at shutdown."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(pki.ca))
    handle = _init(mtls_rx, protocol)
    trace.get_tracer("t").start_span("refused").end()
    assert not handle.force_flush(0.5)
    assert handle.telemetry_stats()["spans"].buffered == 1
    assert not handle.shutdown(0.3)
    stats = handle.telemetry_stats()["spans"]
    assert (stats.exported, stats.dropped["shutdown"]) == (0, 1)
    assert mtls_rx.spans() == []


def test_an_untrusted_collector_gets_nothing(
    tls_rx: OtlpReceiver, pki: Pki, protocol: str, monkeypatch: pytest.MonkeyPatch
):
    """A collector whose certificate the configured CA did not sign is not sent anything."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(pki.other_ca))
    handle = _init(tls_rx, protocol)
    trace.get_tracer("t").start_span("untrusted").end()
    assert not handle.force_flush(0.5)
    handle.shutdown(0.2)
    assert tls_rx.request_count() == 0 or tls_rx.spans() == []


def test_requests_ca_bundle_does_not_override_the_otlp_certificate(
    tls_rx: OtlpReceiver, pki: Pki, monkeypatch: pytest.MonkeyPatch
):
    """REQUESTS_CA_BUNDLE set to another CA (psf/requests#3829): OTEL_EXPORTER_OTLP_CERTIFICATE still wins."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.other_ca))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(pki.other_ca))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(pki.ca))
    handle = _init(tls_rx, "http/protobuf")
    trace.get_tracer("t").start_span("pinned ca").end()
    assert handle.force_flush(10)
    tls_rx.wait_for_span("pinned ca", timeout=5)
    assert handle.shutdown(5)
    # The stock exporter that `obskit check` uses gets the same protection.
    from opentelemetry.sdk.trace.export import SpanExportResult

    settings = _config.load_settings(
        {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki.ca)}, endpoint=tls_rx.http_endpoint, protocol="http/protobuf"
    )
    exporter = _exporters.span_exporter(settings)
    assert exporter is not None
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    sdk = TracerProvider(shutdown_on_exit=False)
    sdk.add_span_processor(SimpleSpanProcessor(memory))
    sdk.get_tracer("t").start_span("stock exporter").end()
    assert exporter.export(memory.get_finished_spans()) == SpanExportResult.SUCCESS
    tls_rx.wait_for_span("stock exporter", timeout=5)
    exporter.shutdown()
    sdk.shutdown()
