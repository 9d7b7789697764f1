"""Safe by default: no query strings or headers unless opted in; credentials always redacted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Response
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from obskit import testing
from obskit._integrations._http import RedactingSpanProcessor, is_sensitive_header, redact_query, scrub_url

SECRET_HEADERS = {
    "Authorization": "Bearer s3cr3t",
    "Proxy-Authorization": "Basic s3cr3t",
    "Cookie": "session=s3cr3t",
    "X-Api-Key": "s3cr3t",
    "Api-Key": "s3cr3t",
    "X-Upstream-Token": "s3cr3t",
    "X-Client-Secret": "s3cr3t",
}
CAPTURED = ("content-type", "x-model-route", "set-cookie", *(name.lower() for name in SECRET_HEADERS))


def _fastapi_app() -> Any:
    app = FastAPI()

    @app.post("/predict")
    def predict(response: Response) -> dict[str, int]:
        response.headers["X-Model-Route"] = "blue"
        response.set_cookie("sid", "s3cr3t")
        return {"ok": 1}

    return app


def _flask_app() -> Any:
    from flask import Flask, jsonify

    app = Flask("safe")

    @app.post("/predict")
    def predict() -> Any:
        response = jsonify({"ok": 1})
        response.headers["X-Model-Route"] = "blue"
        response.set_cookie("sid", "s3cr3t")
        return response

    return app


def _post(framework: str, app: Any, url: str, headers: dict[str, str]) -> int:
    if framework == "fastapi":
        from fastapi.testclient import TestClient

        return TestClient(app).post(url, json={"x": 1}, headers=headers).status_code
    client = app.test_client()
    if "Cookie" in headers:  # Werkzeug's test client sends cookies from its jar only
        name, _, value = headers["Cookie"].partition("=")
        client.set_cookie(name, value)
    return int(client.post(url, json={"x": 1}, headers=headers).status_code)


@pytest.fixture(params=["fastapi", "flask"])
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_app(framework: str) -> Any:
    return _fastapi_app if framework == "fastapi" else _flask_app


def _server_span(capture: testing.CapturedTelemetry) -> Any:
    [span] = [s for s in capture.spans() if s.kind == trace.SpanKind.SERVER]
    return span


def test_no_query_string_or_headers_by_default(framework: str, make_app: Any):
    """Nothing opted in: the server span has the path but no query string and no header attribute."""
    with testing.capture_telemetry() as capture:
        app = make_app()
        assert _post(framework, app, "/predict?token=abc&user=42", SECRET_HEADERS) == 200
        span = _server_span(capture)
    attributes = dict(span.attributes)
    assert attributes["url.path"] == "/predict"
    assert "url.query" not in attributes
    assert not [key for key in attributes if key.startswith(("http.request.header.", "http.response.header."))]
    assert "s3cr3t" not in repr(attributes)
    assert "abc" not in repr(attributes)


def test_opted_in_headers_are_captured_with_credentials_redacted(framework: str, make_app: Any):
    """OBSKIT_CAPTURE_HEADERS: listed headers are recorded; Authorization, cookies, API keys and tokens redacted."""
    with testing.capture_telemetry(capture_headers=CAPTURED) as capture:
        app = make_app()
        headers = {**SECRET_HEADERS, "X-Model-Route": "canary"}
        assert _post(framework, app, "/predict", headers) == 200
        span = _server_span(capture)
    attributes = dict(span.attributes)
    headers_seen = {
        k: tuple(v) for k, v in attributes.items() if k.startswith(("http.request.header.", "http.response.header."))
    }
    assert headers_seen["http.request.header.content_type"] == ("application/json",)
    assert headers_seen["http.request.header.x_model_route"] == ("canary",)
    assert headers_seen["http.response.header.x_model_route"] == ("blue",)
    for name in SECRET_HEADERS:
        key = "http.request.header." + name.lower().replace("-", "_")
        assert headers_seen[key] == ("[REDACTED]",), key
    assert headers_seen["http.response.header.set_cookie"] == ("[REDACTED]",)
    assert "s3cr3t" not in repr(attributes)


def test_headers_captured_through_contrib_variables_are_redacted_too(monkeypatch: pytest.MonkeyPatch):
    """An application that sets contrib's own capture variable to '.*' still gets credentials redacted."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", ".*")
    with testing.capture_telemetry() as capture:
        app = _flask_app()
        assert _post("flask", app, "/predict", SECRET_HEADERS) == 200
        span = _server_span(capture)
    attributes = dict(span.attributes)
    assert attributes["http.request.header.authorization"] == ("[REDACTED]",)
    assert attributes["http.request.header.x_api_key"] == ("[REDACTED]",)
    assert "s3cr3t" not in repr(attributes)


def test_url_attributes_of_any_span_lose_credentials_and_query():
    """A span from any instrumentation (here the application's own) keeps no query string or URL password."""
    with testing.capture_telemetry() as capture:
        with trace.get_tracer("client").start_as_current_span("GET feature-store") as span:
            span.set_attribute("url.full", "https://svc:hunter2@features.internal/v1/user?api_key=k&id=7")
            span.set_attribute("http.request.header.authorization", ("Bearer s3cr3t",))
        [finished] = capture.spans("GET feature-store")
    assert finished.attributes["url.full"] == "https://REDACTED:REDACTED@features.internal/v1/user"
    assert finished.attributes["http.request.header.authorization"] == ("[REDACTED]",)


@pytest.fixture
def opted_in() -> Iterator[tuple[Any, InMemorySpanExporter]]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(RedactingSpanProcessor(capture_query=True))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield provider.get_tracer("t"), memory
    provider.shutdown()


def test_opted_in_query_strings_have_secrets_redacted(opted_in: tuple[Any, InMemorySpanExporter]):
    """With query strings opted in, sensitive parameters are redacted from url.query and url.full, others kept."""
    tracer, memory = opted_in
    attributes = {
        "url.query": "q=iris&token=abc&Signature=xyz&page=2",
        "url.full": "https://api.example/v1/predict?access_token=abc&q=iris&sig=1&X-Amz-Credential=AK",
    }
    tracer.start_span("GET /v1/predict", attributes=attributes).end()
    [span] = memory.get_finished_spans()
    assert span.attributes["url.query"] == "q=iris&token=REDACTED&Signature=REDACTED&page=2"
    assert span.attributes["url.full"] == (
        "https://api.example/v1/predict?access_token=REDACTED&q=iris&sig=REDACTED&X-Amz-Credential=REDACTED"
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ""),
        ("q=1", "q=1"),
        ("token=a", "token=REDACTED"),
        (
            "api_key=a&apikey=b&api-key=c&key=d&monkey=e",
            "api_key=REDACTED&apikey=REDACTED&api-key=REDACTED&key=REDACTED&monkey=e",
        ),
        (
            "password=p&passwd=p&client_secret=s&id_token=t",
            "password=REDACTED&passwd=REDACTED&client_secret=REDACTED&id_token=REDACTED",
        ),
        (
            "sig=1&signature=2&X-Goog-Signature=3&AWSAccessKeyId=4",
            "sig=REDACTED&signature=REDACTED&X-Goog-Signature=REDACTED&AWSAccessKeyId=REDACTED",
        ),
        ("flag&token", "flag&token"),
        ("q=a%20b&Token=x", "q=a%20b&Token=REDACTED"),
    ],
)
def test_redact_query(query: str, expected: str):
    """Sensitive parameter values are replaced; the rest, its order and encoding are untouched."""
    assert redact_query(query) == expected


@pytest.mark.parametrize(
    ("url", "keep_query", "expected"),
    [
        ("/predict?token=1", False, "/predict"),
        ("/predict?token=1&q=2", True, "/predict?token=REDACTED&q=2"),
        ("https://u:p@h/x?y=1#frag", False, "https://REDACTED:REDACTED@h/x#frag"),
        ("https://h/x", False, "https://h/x"),
    ],
)
def test_scrub_url(url: str, keep_query: bool, expected: str):
    """URLs lose credentials, and their query unless opted in."""
    assert scrub_url(url, keep_query=keep_query) == expected


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("authorization", True),
        ("proxy_authorization", True),
        ("set-cookie", True),
        ("x-api-key", True),
        ("x-csrf-token", True),
        ("x-client-secret", True),
        ("content-type", False),
        ("x-model-route", False),
        ("user-agent", False),
    ],
)
def test_sensitive_header_names(name: str, sensitive: bool):
    """Credential-bearing header names are recognised however they are spelled (dashes or underscores)."""
    assert is_sensitive_header(name) is sensitive
