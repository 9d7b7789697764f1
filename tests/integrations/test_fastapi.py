from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import obskit
from obskit import IntegrationUnavailable
from obskit.testing import capture_telemetry


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return app


def test_app_created_after_init_is_instrumented():
    """An app created after init() gets a server span named by its route template."""
    with capture_telemetry() as telemetry:
        app = _app()
        assert TestClient(app).get("/items/7").status_code == 200
        [span] = telemetry.spans(name="GET /items/{item_id}")
        assert span.attributes is not None
        assert span.attributes["http.route"] == "/items/{item_id}"
        assert telemetry.metric("http.server.request.duration").count(route="/items/{item_id}") == 1


def test_app_created_before_init_with_instrument_app():
    """instrument_app() instruments an app made before init(); a second call is a no-op."""
    app = _app()
    with capture_telemetry(auto_instrument=False) as telemetry:
        assert obskit.instrument_app(app) is app
        obskit.instrument_app(app)
        TestClient(app).get("/items/1")
        assert len(telemetry.spans(name="GET /items/{item_id}")) == 1
        assert telemetry.metric("http.server.request.duration").count() == 1


def test_instrument_app_before_init_is_applied_by_init():
    """An app passed to instrument_app() before init() is instrumented when init() runs."""
    app = _app()
    obskit.instrument_app(app)
    with capture_telemetry(auto_instrument=False) as telemetry:
        TestClient(app).get("/items/2")
        assert len(telemetry.spans(name="GET /items/{item_id}")) == 1


@pytest.mark.parametrize("middleware", ["obskit", "contrib"])
def test_instrument_app_on_an_app_that_already_served(middleware: str):
    """An app that served requests before instrument_app() built its middleware stack without us: it is rebuilt."""
    app = _app()
    with TestClient(app) as client:
        assert client.get("/items/1").status_code == 200
        with capture_telemetry(auto_instrument=False, http_instrumentation=middleware) as telemetry:
            obskit.instrument_app(app)
            assert client.get("/items/2").status_code == 200
            assert len(telemetry.spans(name="GET /items/{item_id}")) == 1
            assert telemetry.metric("http.server.request.duration").count(route="/items/{item_id}") == 1


def test_auto_instrument_off_leaves_new_apps_alone():
    """OBSKIT_AUTO_INSTRUMENT=false: apps created after init() are not instrumented by obskit.

    (Recent FastAPI releases trace themselves through the global providers when nothing else does; those spans
    come from the ``fastapi`` scope and stand down once contrib's middleware is in the stack.)
    """
    with capture_telemetry(auto_instrument=False) as telemetry:
        app = _app()
        TestClient(app).get("/items/3")
        assert not getattr(app, "_is_instrumented_by_opentelemetry", False)
        scopes = {s.instrumentation_scope.name for s in telemetry.spans() if s.instrumentation_scope}
        assert not {scope for scope in scopes if scope.startswith("opentelemetry.instrumentation")}


def test_fastapi_native_telemetry_stands_down_when_instrumented():
    """An instrumented app yields exactly one server span per request (FastAPI's own tracing stays off)."""
    with capture_telemetry() as telemetry:
        TestClient(_app()).get("/items/8")
        spans = telemetry.spans()
        assert [s.name for s in spans] == ["GET /items/{item_id}"]
        assert {s.instrumentation_scope.name for s in spans if s.instrumentation_scope} == {
            "opentelemetry.instrumentation.fastapi"
        }


def test_unknown_method_is_other():
    """An unknown HTTP method is recorded as _OTHER and the span is named 'HTTP'."""
    with capture_telemetry() as telemetry:
        app = _app()
        TestClient(app).request("FROBNICATE", "/items/4")
        names = [s.name for s in telemetry.spans()]
        assert "HTTP" in names or "HTTP /items/{item_id}" in names
        assert all("FROBNICATE" not in name for name in names)
        metric = telemetry.metric("http.server.request.duration")
        assert {a["http.request.method"] for a in metric.attributes()} == {"_OTHER"}


def test_stable_semconv_whatever_the_opt_in(monkeypatch: pytest.MonkeyPatch):
    """OTEL_SEMCONV_STABILITY_OPT_IN=http/dup still yields only the stable HTTP names."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http/dup")
    from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability

    monkeypatch.setattr(_OpenTelemetrySemanticConventionStability, "_initialized", False)
    with capture_telemetry() as telemetry:
        TestClient(_app()).get("/items/5")
        names = telemetry.metric_names()
        assert "http.server.request.duration" in names
        assert "http.server.duration" not in names
        [span] = telemetry.spans(name="GET /items/{item_id}")
        assert span.attributes is not None
        assert "http.method" not in span.attributes
        assert span.attributes["http.request.method"] == "GET"


def test_missing_extra_raises_with_install_hint(monkeypatch: pytest.MonkeyPatch):
    """Explicitly instrumenting without the contrib package names the extra to install."""
    from obskit import _integrations

    monkeypatch.setattr(_integrations, "_contrib_available", lambda framework: False)
    with pytest.raises(IntegrationUnavailable, match=r"pip install 'obskit\[fastapi\]'"):
        obskit.instrument_app(_app())


def test_instrument_app_rejects_other_objects():
    """instrument_app() on something that is not an app says what it expects."""
    with pytest.raises(TypeError, match="expects a Flask or FastAPI app, got int"):
        obskit.instrument_app(3)


def test_query_strings_off_by_default_redacted_when_opted_in():
    """No query string on spans by default; with capture_query=True, secrets in it are redacted."""
    with capture_telemetry() as telemetry:
        TestClient(_app()).get("/items/1?token=abc123&q=iris")
        [span] = telemetry.spans(name="GET /items/{item_id}")
        assert span.attributes is not None
        assert "url.query" not in span.attributes
        assert "abc123" not in str(dict(span.attributes))
    with capture_telemetry(capture_query=True, capture_headers=("x-model",)) as telemetry:
        TestClient(_app()).get("/items/1?token=abc123&q=iris")
        [span] = telemetry.spans(name="GET /items/{item_id}")
        assert span.attributes is not None
        assert span.attributes["url.query"] == "token=REDACTED&q=iris"
        assert "abc123" not in str(dict(span.attributes))


def _routed_app(n: int) -> FastAPI:
    app = FastAPI()
    for i in range(n):

        def handler(item_id: int, i: int = i) -> dict[str, int]:
            return {"route": i, "id": item_id}

        app.add_api_route(f"/r{i}/{{item_id}}", handler, methods=["GET"])

    @app.get("/predict")
    def predict() -> dict[str, str]:
        return {"ok": "yes"}

    return app


def test_route_lookup_memoised_with_contrib_names(monkeypatch: pytest.MonkeyPatch):
    """Span names and routes match contrib's own lookup; a repeated path does not scan the routes again."""
    import opentelemetry.instrumentation.fastapi as contrib

    with capture_telemetry(http_instrumentation="contrib") as telemetry:
        app = _routed_app(50)
        client = TestClient(app)
        scans: list[str] = []
        original = contrib._get_route_details
        monkeypatch.setattr(contrib, "_get_route_details", lambda scope: scans.append(scope["path"]) or original(scope))
        paths = ["/predict", "/r7/1", "/r49/2", "/nope", "/predict", "/r7/1", "/r49/2", "/nope", "/r7/3"]
        for path in paths:
            client.get(path)
        names = [s.name for s in telemetry.spans()]
        assert names == [
            "GET /predict",
            "GET /r7/{item_id}",
            "GET /r49/{item_id}",
            "GET",
            "GET /predict",
            "GET /r7/{item_id}",
            "GET /r49/{item_id}",
            "GET",
            "GET /r7/{item_id}",
        ]
        assert scans == ["/predict", "/r7/1", "/r49/2", "/nope", "/r7/3"]  # each new path once
        routes = {a.get("http.route") for a in telemetry.metric("http.server.request.duration").attributes()}
        assert routes == {"/predict", "/r7/{item_id}", "/r49/{item_id}", None}


@pytest.mark.parametrize("middleware", ["obskit", "contrib"])
def test_global_response_propagator_is_honoured(middleware: str):
    """With a response propagator set (traceresponse), the response carries the server span's ids, as contrib's."""
    from opentelemetry.instrumentation.propagators import (
        TraceResponsePropagator,
        get_global_response_propagator,
        set_global_response_propagator,
    )

    previous = get_global_response_propagator()
    set_global_response_propagator(TraceResponsePropagator())  # type: ignore[no-untyped-call]
    try:
        with capture_telemetry(http_instrumentation=middleware) as telemetry:
            response = TestClient(_app()).get("/items/3")
            [span] = telemetry.spans(name="GET /items/{item_id}")
    finally:
        set_global_response_propagator(previous)
    context = span.get_span_context()
    flags = int(context.trace_flags)  # sampled, and W3C level 2's random bit
    assert flags & 1
    assert response.headers["traceresponse"] == f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"


def _get_under_root_path(app: FastAPI, path: str) -> int:
    """A request as uvicorn --root-path /api passes it: root_path "/api", and the path includes it."""
    import asyncio

    import httpx

    async def get() -> int:
        transport = httpx.ASGITransport(app=app, root_path="/api")
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return (await client.get(path)).status_code

    return asyncio.run(get())


def test_excluded_urls_hold_under_a_root_path():
    """Behind a proxy the health check's path is /api/healthz: excluded as /healthz is, while routes are traced."""
    with capture_telemetry() as telemetry:
        app = _app()

        @app.get("/healthz")
        def healthz() -> str:
            return "ok"

        assert _get_under_root_path(app, "/api/healthz") == 200
        assert _get_under_root_path(app, "/api/items/4") == 200
        assert [s.name for s in telemetry.spans()] == ["GET /items/{item_id}"]
        assert telemetry.metric("http.server.request.duration").count() == 1


def test_a_stream_failing_after_its_status_is_an_error():
    """An exception once a 200 went out: error.type is the exception's class on the span and the duration metric."""
    from fastapi.responses import StreamingResponse

    with capture_telemetry() as telemetry:
        app = _app()

        @app.get("/stream")
        def stream() -> StreamingResponse:
            def chunks():  # type: ignore[no-untyped-def]
                yield b"first"
                raise RuntimeError("model crashed mid-stream")

            return StreamingResponse(chunks())

        with pytest.raises(RuntimeError, match="mid-stream"):
            TestClient(app).get("/stream")
        [span] = telemetry.spans(name="GET /stream")
        assert span.attributes is not None
        assert (span.attributes["http.response.status_code"], span.attributes["error.type"]) == (200, "RuntimeError")
        assert span.status.status_code.name == "ERROR"
        duration = telemetry.metric("http.server.request.duration")
        assert duration.count({"error.type": "RuntimeError"}, route="/stream", status_code=200) == 1


def test_open_inference_protocol_probes_are_excluded_by_default():
    """KServe v2 / Triton / MLServer probe paths produce no span and no metric; the inference route does."""
    with capture_telemetry() as telemetry:
        app = FastAPI()

        @app.get("/v2/health/ready")
        def ready() -> dict[str, bool]:
            return {"ready": True}

        @app.get("/v2/models/{name}/ready")
        def model_ready(name: str) -> dict[str, str]:
            return {"name": name}

        @app.post("/v2/models/{name}/infer")
        def infer(name: str) -> dict[str, str]:
            return {"model_name": name}

        client = TestClient(app)
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v2/models/iris/ready").status_code == 200
        assert client.post("/v2/models/iris/infer").status_code == 200
        assert [s.name for s in telemetry.spans()] == ["POST /v2/models/{name}/infer"]
        assert telemetry.metric("http.server.request.duration").count() == 1


@pytest.mark.parametrize("header", [b"user-agent", b"traceparent"])
def test_undecodable_header_bytes_leave_the_request_measured(header: bytes):
    """Bytes that are neither UTF-8 nor a valid escape (b"\\xff\\\\x") made contrib's decoding raise: the request
    went without span and metric, a way for a client to hide from the error rate."""
    import asyncio

    with capture_telemetry() as telemetry:
        app = _app()

        async def call() -> None:
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": "/items/1",
                "raw_path": b"/items/1",
                "query_string": b"",
                "root_path": "",
                "headers": [(b"host", b"testserver"), (header, b"\xff\\x")],
                "client": ("127.0.0.1", 5000),
                "server": ("testserver", 80),
            }
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            await app(scope, receive, send)
            assert sent[0]["status"] == 200

        asyncio.run(call())
        assert [s.name for s in telemetry.spans()] == ["GET /items/{item_id}"]
        assert telemetry.metric("http.server.request.duration").count() == 1


def test_client_sent_span_values_are_cut_to_a_bound():
    """A 20-KB path, query and User-Agent are kept to 8,192 characters on the span (the span queue counts spans)."""
    from obskit._integrations._http import MAX_CLIENT_VALUE

    with capture_telemetry(capture_query=True, capture_headers=("x-model",)) as telemetry:
        app = _app()
        long = "x" * 20_000
        TestClient(app).get(f"/items/{long}?q={long}", headers={"user-agent": "agent/" + long, "x-model": long})
        [span] = telemetry.spans(name="GET /items/{item_id}")
        assert span.attributes is not None
        assert span.attributes["url.path"] == ("/items/" + long)[:MAX_CLIENT_VALUE]
        assert span.attributes["url.query"] == ("q=" + long)[:MAX_CLIENT_VALUE]
        assert span.attributes["user_agent.original"] == ("agent/" + long)[:MAX_CLIENT_VALUE]
        assert span.attributes["http.request.header.x_model"] == (long[:MAX_CLIENT_VALUE],)  # an opted-in header
        assert MAX_CLIENT_VALUE == 8192
