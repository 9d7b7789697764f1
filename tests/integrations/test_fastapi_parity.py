"""obskit's own FastAPI middleware emits what contrib's FastAPIInstrumentor emits (stable HTTP semconv).

The same app and the same requests are driven once with ``http_instrumentation="contrib"`` and once with
``"obskit"``; spans (name, kind, scope, parent, attributes, status, events) and metric streams (scope, name,
unit, attribute sets, counts, bucket boundaries, sizes) must be equal.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response, StreamingResponse
from fastapi.testclient import TestClient
from opentelemetry import trace

from obskit.testing import CapturedTelemetry, capture_telemetry

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"

# (method, path, headers, body)
REQUESTS: list[tuple[str, str, dict[str, str], bytes | None]] = [
    # First: contrib keeps the last response's Content-Length on its middleware and records it again for a
    # response without one (a streaming response); obskit records only this response's own length.
    ("GET", "/stream", {}, None),
    (
        "GET",
        "/items/7?q=iris&token=abc123",
        {
            "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
            "tracestate": "vendor=1",
            "x-model": "m1",
            "x-api-key": "s3cret",
            "user-agent": "parity-test/1.0",
        },
        None,
    ),
    ("GET", "/items/8", {"x-model": "m2", "x-model-extra": "not-captured"}, None),
    ("POST", "/items/9", {}, b'{"a": 1}'),
    ("GET", "/v1/models/iris", {}, None),
    ("GET", "/sub/ping/3", {}, None),
    ("GET", "/nope", {}, None),
    ("GET", "/boom", {}, None),
    ("GET", "/http500", {}, None),
    ("FROBNICATE", "/items/1", {}, None),
    ("GET", "/healthz", {}, None),
    ("GET", "/items/7/", {}, None),
    # Answered by a middleware before any routing: a CORS preflight, and an auth middleware's 401.
    ("OPTIONS", "/items/5", {"origin": "http://ui.example", "access-control-request-method": "GET"}, None),
    ("GET", "/private/1", {}, None),
    ("GET", "/renamed", {}, None),  # the handler renames the server span
]


def _auth(app: Any) -> Any:
    """A pure ASGI middleware that answers 401 to /private/* requests without an x-key header."""

    async def middleware(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/private") and b"x-key" not in dict(scope["headers"]):
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await app(scope, receive, send)

    return middleware


def _app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(_auth)
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"])

    @app.get("/private/{x}")
    def private(x: int) -> dict[str, int]:
        return {"x": x}

    @app.get("/renamed")
    def renamed() -> str:
        trace.get_current_span().update_name("score fraud")
        return "ok"

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/boom")
    def boom() -> None:
        raise ValueError("boom")

    @app.get("/http500")
    def http500() -> None:
        raise HTTPException(status_code=500, detail="unavailable")

    @app.get("/stream")
    def stream() -> StreamingResponse:
        return StreamingResponse(iter([b"a", b"bc"]), media_type="text/plain")

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.get("/maybe/{n}")
    def maybe(n: int) -> Response:
        return Response(b"x" * n)  # /maybe/0: Content-Length 0, which contrib does not record as a body size

    router = APIRouter(prefix="/v1")

    @router.get("/models/{name}")
    def model(name: str) -> dict[str, str]:
        return {"name": name}

    app.include_router(router)
    sub = FastAPI()

    @sub.get("/ping/{n}")
    def ping(n: int) -> dict[str, int]:
        return {"pong": n}

    app.mount("/sub", sub)
    return app


def _events(span: Any) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for event in span.events:
        attributes = dict(event.attributes or {})
        # The stack differs by the middleware frames above the handler; its last frame (the raise) must not.
        stack = attributes.pop("exception.stacktrace", None)
        if stack is not None:
            attributes["exception.stacktrace.last"] = stack.strip().splitlines()[-2:]
        events.append((event.name, attributes))
    return events


def _spans(telemetry: CapturedTelemetry) -> list[dict[str, Any]]:
    spans = telemetry.spans()
    index = {span.context.span_id: i for i, span in enumerate(spans)}
    out = []
    for span in spans:
        parent = None
        if span.parent is not None:
            parent = index.get(span.parent.span_id, f"remote {span.parent.span_id:016x} {span.parent.is_remote}")
        scope = span.instrumentation_scope
        out.append(
            {
                "name": span.name,
                "kind": span.kind,
                "scope": (scope.name, scope.version, scope.schema_url) if scope else None,
                "parent": parent,
                "trace": f"{span.context.trace_id:032x}" if span.parent is not None and span.parent.is_remote else None,
                "attributes": dict(span.attributes or {}),
                "status": (span.status.status_code, span.status.description),
                "events": _events(span),
            }
        )
    return out


def _metrics(telemetry: CapturedTelemetry) -> dict[tuple[Any, ...], dict[frozenset[Any], tuple[Any, ...]]]:
    streams: dict[tuple[Any, ...], dict[frozenset[Any], tuple[Any, ...]]] = {}
    data = telemetry.metric_reader.get_metrics_data()
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope
            if not scope.name.startswith("opentelemetry.instrumentation"):
                continue
            for metric in scope_metrics.metrics:
                key = (scope.name, scope.version, scope.schema_url, metric.name, metric.unit, metric.description)
                points = streams.setdefault(key, {})
                for point in metric.data.data_points:
                    attributes = frozenset((point.attributes or {}).items())
                    if ("http.route", "/ping/{n}") in attributes:
                        # contrib counts a request to the mounted sub-app twice, under /sub and under the sub-app's
                        # own route; obskit once, under /sub (a deliberate difference: test_mounted_app_counted_once).
                        continue
                    if metric.name == "http.server.request.duration":  # timings differ; counts and buckets don't
                        points[attributes] = (point.count, tuple(point.explicit_bounds))
                    elif hasattr(point, "count"):
                        points[attributes] = (point.count, point.sum, tuple(point.bucket_counts))
                    else:
                        points[attributes] = (point.value,)
    return streams


def _drive(
    mode: str, requests: list[tuple[str, str, dict[str, str], bytes | None]] = REQUESTS, **settings: Any
) -> tuple[list[dict[str, Any]], dict[Any, Any]]:
    with capture_telemetry(http_instrumentation=mode, **settings) as telemetry:
        client = TestClient(_app(), raise_server_exceptions=False)
        for method, path, headers, body in requests:
            client.request(method, path, headers=headers, content=body)
        return _spans(telemetry), _metrics(telemetry)


SETTINGS = {
    "defaults": {},
    "capture": {"capture_query": True, "capture_headers": ("x-model", "x-api-key", "content-type")},
}


@pytest.fixture(params=sorted(SETTINGS))
def both(request: pytest.FixtureRequest) -> tuple[Any, Any]:
    settings = SETTINGS[request.param]
    return _drive("contrib", **settings), _drive("obskit", **settings)


def test_same_spans_as_contrib(both: tuple[Any, Any]):
    """Same spans, in the same order: names, kinds, scopes, parents, attributes, status and events."""
    (contrib_spans, _), (obskit_spans, _) = both
    assert [s["name"] for s in obskit_spans] == [s["name"] for s in contrib_spans]
    for ours, theirs in zip(obskit_spans, contrib_spans, strict=True):
        assert ours == theirs, ours["name"]


def test_same_metric_streams_as_contrib(both: tuple[Any, Any]):
    """Same HTTP metric streams: scope, name, unit, description, attribute sets, counts, buckets and sizes."""
    (_, contrib_metrics), (_, obskit_metrics) = both
    assert sorted(obskit_metrics) == sorted(contrib_metrics)
    for key, points in contrib_metrics.items():
        assert obskit_metrics[key] == points, key


def test_repeated_requests_same_metric_streams_as_contrib():
    """Each attribute tuple again and again: later requests take obskit's cached series (one lookup for the three
    histograms once each has one), counts and sums still as contrib's. Without /stream: contrib would record the
    previous response's Content-Length for it (see REQUESTS)."""
    maybe: list[tuple[str, str, dict[str, str], bytes | None]] = [
        ("GET", f"/maybe/{n}", {}, None) for n in (0, 1, 0, 2)
    ]
    requests = [*REQUESTS[1:], *maybe] * 3
    (_, contrib_metrics), (_, obskit_metrics) = _drive("contrib", requests), _drive("obskit", requests)
    assert sorted(obskit_metrics) == sorted(contrib_metrics)
    for key, points in contrib_metrics.items():
        assert obskit_metrics[key] == points, key
    counts = [
        point[0]
        for key, points in obskit_metrics.items()
        if key[3] == "http.server.request.duration"
        for point in points.values()
    ]
    assert max(counts) >= 6  # /items/7 and /items/8 share their attributes: 6 requests in one series


def test_the_cases_are_exercised():
    """The parity above covers what it claims: a remote parent, an error, a mount, redaction, exclusion."""
    spans, metrics = _drive("obskit", capture_query=True, capture_headers=("x-model", "x-api-key"))
    by_path: dict[str, dict[str, Any]] = {}
    for span in spans:  # the first server span of each path (the client follows the trailing-slash redirect)
        if span["kind"].name == "SERVER":
            by_path.setdefault(span["attributes"]["url.path"], span)
    traced = by_path["/items/7"]
    assert traced["name"] == "GET /items/{item_id}"
    assert traced["parent"] == f"remote {PARENT_ID} True"
    assert traced["trace"] == TRACE_ID
    assert traced["attributes"]["url.query"] == "q=iris&token=REDACTED"
    assert traced["attributes"]["http.request.header.x_api_key"] == ("[REDACTED]",)
    assert traced["attributes"]["http.request.header.x_model"] == ("m1",)
    assert by_path["/boom"]["events"][0][0] == "exception"
    assert by_path["/boom"]["status"][0].name == "ERROR"
    assert by_path["/items/1"]["name"] == "HTTP /items/{item_id}"
    assert by_path["/items/1"]["attributes"]["http.request.method_original"] == "FROBNICATE"
    assert (by_path["/sub/ping/3"]["name"], by_path["/v1/models/iris"]["name"]) == ("GET /sub", "GET /v1/models/{name}")
    assert by_path["/nope"]["name"] == "GET"
    assert by_path["/items/5"]["name"] == "OPTIONS /items/{item_id}"  # the CORS middleware answered
    assert by_path["/private/1"]["name"] == "GET /private/{x}"
    assert by_path["/private/1"]["attributes"]["http.response.status_code"] == 401
    assert by_path["/renamed"]["name"] == "score fraud"
    assert not [s for s in spans if s["attributes"].get("url.path") == "/healthz"]
    assert all(s["scope"][0] == "opentelemetry.instrumentation.fastapi" for s in spans)
    assert any(name == "http.server.request.body.size" for _, _, _, name, _, _ in metrics)


def test_one_server_span_per_request():
    """FastAPI's own telemetry stays off under obskit's middleware: one span per request, contrib's scope only."""
    with capture_telemetry() as telemetry:
        client = TestClient(_app())
        client.get("/items/1")
        client.get("/v1/models/a")
        spans = telemetry.spans()
        assert [s.name for s in spans] == ["GET /items/{item_id}", "GET /v1/models/{name}"]
        assert {s.instrumentation_scope.name for s in spans if s.instrumentation_scope} == {
            "opentelemetry.instrumentation.fastapi"
        }
        assert telemetry.metric("http.server.request.duration").count() == 2


def test_capture_all_methods_as_contrib(monkeypatch: pytest.MonkeyPatch):
    """OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS: an unknown method is kept, not _OTHER, as in contrib."""
    monkeypatch.setenv("OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS", "true")
    contrib_spans, contrib_metrics = _drive("contrib")
    obskit_spans, obskit_metrics = _drive("obskit")
    assert "FROBNICATE /items/{item_id}" in [s["name"] for s in contrib_spans]
    assert obskit_spans == contrib_spans
    assert obskit_metrics == contrib_metrics


def _drive_metrics_only() -> dict[Any, Any]:
    """The obskit middleware as init() wires it with traces off: a no-op tracer provider, the guarded meters."""
    from opentelemetry import trace
    from starlette.routing import Mount

    from obskit import _guard
    from obskit import _semconv as sc
    from obskit._integrations import fastapi as fastapi_integration

    with capture_telemetry(auto_instrument=False) as telemetry:
        app = _app()
        [sub] = [route.app for route in app.router.routes if isinstance(route, Mount)]
        for one in (app, sub):  # as auto-instrumentation does: every FastAPI app, the mounted one too
            fastapi_integration.instrument(
                one, trace.NoOpTracerProvider(), _guard.current(), (sc.DEFAULT_EXCLUDED_URLS,), "obskit"
            )
        client = TestClient(app, raise_server_exceptions=False)
        for method, path, headers, body in REQUESTS:
            client.request(method, path, headers=headers, content=body)
        assert telemetry.spans() == []
        return _metrics(telemetry)


def test_metrics_only_mode_has_the_same_metric_streams():
    """Without spans (metrics only: no exception recorder, a plain send wrapper) the HTTP metrics do not change."""
    _, traced = _drive("obskit")
    metrics_only = _drive_metrics_only()
    assert sorted(metrics_only) == sorted(traced)
    for key, points in traced.items():
        assert metrics_only[key] == points, key
    errors = [p for p in metrics_only[next(k for k in traced if k[3] == "http.server.request.duration")]]
    assert any(("error.type", "500") in attributes for attributes in errors)


def test_metrics_through_another_meter_provider():
    """A meter provider other than obskit's: each series goes through the API instrument (ApiSeries)."""
    from opentelemetry import trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from obskit._integrations import fastapi as fastapi_integration

    reader = InMemoryMetricReader()
    app = _app()
    fastapi_integration.instrument(app, trace.NoOpTracerProvider(), MeterProvider(metric_readers=[reader]), ())
    client = TestClient(app, raise_server_exceptions=False)
    client.get("/items/1")
    client.get("/boom")
    data = reader.get_metrics_data()
    assert data is not None
    points = {
        metric.name: {frozenset((p.attributes or {}).items()): p for p in metric.data.data_points}
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }
    durations = {dict(k).get("http.route"): p.count for k, p in points["http.server.request.duration"].items()}
    assert durations == {"/items/{item_id}": 1, "/boom": 1}
    assert [p.value for p in points["http.server.active_requests"].values()] == [0]  # +1 and -1 on one series


def _scope(path: str, **changes: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"model:8000"), (b"user-agent", b"curl/8")],
        "client": ("10.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    scope.update(changes)
    return scope


# Requests whose span attributes share all but the path, the client's address or port (obskit copies the rest from
# its per-shape template and sets those three), then every element its template key is made of, changed alone.
SCOPES: list[dict[str, Any]] = [
    _scope("/items/7"),
    _scope("/items/8", client=("10.0.0.2", 40001)),
    _scope("/items/9", client=("10.0.0.1", 9)),
    _scope("/items/10", client=("", 40002)),
    _scope("/items/11", client=None),
    _scope("/items/12", client=("10.0.0.3", None)),
    _scope("/items/13", server=None),
    _scope("/items/14", server=("model", 80)),
    _scope("/items/15", server=["127.0.0.1", 8000]),  # a list (Starlette's TestClient gives one)
    _scope("/items/16", http_version="2"),
    _scope("/items/17", scheme="https"),
    _scope("/items/18", method="FROBNICATE"),
    _scope("/items/19", headers=[(b"user-agent", b"Googlebot/2.1")]),
    _scope("/items/20", headers=[]),
    _scope("/items/21"),
    _scope(""),  # no url.path
]


def _drive_scopes(mode: str) -> list[dict[str, Any]]:
    import asyncio

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def run(app: Any) -> None:
        for scope in SCOPES * 2:
            await app(dict(scope), receive, send)

    with capture_telemetry(http_instrumentation=mode) as telemetry:
        asyncio.run(run(_app()))
        return _spans(telemetry)


def test_request_attributes_per_scope_as_contrib():
    """Every request's span attributes as contrib's, whatever of the scope changes from one request to the next."""
    contrib, obskit = _drive_scopes("contrib"), _drive_scopes("obskit")
    assert len(obskit) == len(contrib) == 2 * len(SCOPES)
    for ours, theirs in zip(obskit, contrib, strict=True):
        assert ours == theirs
    # The cases differ where they should: each changed element shows in its span's attributes.
    first = obskit[0]["attributes"]
    assert len({tuple(sorted(s["attributes"].items())) for s in obskit[: len(SCOPES)]}) == len(SCOPES)
    assert first["client.port"] == 40000
    assert first["url.path"] == "/items/7"


def test_mounted_app_counted_once():
    """A request to an instrumented app mounted in another: one duration point and one server span, for the mount."""
    with capture_telemetry() as telemetry:
        TestClient(_app()).get("/sub/ping/3")
        duration = telemetry.metric("http.server.request.duration")
        assert duration.count() == 1
        assert duration.count(route="/sub") == 1
        assert sorted(s.kind.name for s in telemetry.spans()) == ["INTERNAL", "SERVER"]
        assert telemetry.metric("http.server.active_requests").value() == 0
