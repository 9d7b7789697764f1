"""obskit's own Flask middleware against contrib's FlaskInstrumentor: the same spans and metric streams.

The same app and the same requests are driven once with ``http_instrumentation="contrib"`` and once with
``"obskit"``; everything an exporter would send is compared, except what cannot be equal (ids, timestamps,
durations, the middleware's own frames in an exception's stack trace).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask import Flask
from opentelemetry.sdk.trace import ReadableSpan

import obskit
from obskit import _safety
from obskit.testing import CapturedTelemetry, capture_telemetry

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
HEADERS = ("x-tenant", "authorization", "x-served-by")


@obskit.inference(model="parity")
def _predict(item_id: int) -> int:
    return item_id * 2


def _app() -> Flask:
    app = Flask(__name__)

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> tuple[dict[str, int], int, dict[str, str]]:
        return {"id": _predict(item_id)}, 200, {"X-Served-By": "parity"}

    @app.post("/users/<name>/orders/<int:order>")
    def order(name: str, order: int) -> tuple[str, int]:
        return f"{name}:{order}", 201

    @app.get("/boom")
    def boom() -> str:
        raise ZeroDivisionError("parity boom")

    @app.get("/healthz")
    def health() -> str:
        return "ok"

    return app


def _drive(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/items/3").status_code == 200
    assert client.get("/items/4?a=1&token=secret&b=2").status_code == 200
    assert client.post("/users/ada/orders/7?x=y").status_code == 201
    assert client.get("/nothing/here/42").status_code == 404
    assert client.get("/boom").status_code == 500
    assert client.get("/healthz").status_code == 200  # excluded by default
    assert client.open("/items/3", method="FOO").status_code == 405
    assert client.open("/items/3", method="get").status_code == 200  # lowercase: method_original
    response = client.get(
        "/items/5",
        headers={
            "traceparent": TRACEPARENT,
            "baggage": "tenant=acme",
            "X-Tenant": "acme",
            "Authorization": "Bearer not-for-telemetry",
            "User-Agent": "python-requests/2.32 (pytest)",
        },
        environ_base={"REMOTE_ADDR": "10.1.2.3", "REMOTE_PORT": "54321"},
    )
    assert response.status_code == 200
    bot = {"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1)"}
    assert client.get("/items/8", headers=bot).status_code == 200
    assert (
        client.get("/items/6", base_url="https://api.example.com:8443", headers={"X-Tenant": "beta"}).status_code == 200
    )


def _event(event: Any) -> dict[str, Any]:
    attributes = dict(event.attributes or {})
    stack = attributes.pop("exception.stacktrace", None)
    if stack is not None:
        # The raising frame and the exception line; the middlewares' own frames differ by construction.
        attributes["exception.stacktrace[-3:]"] = stack.strip().splitlines()[-3:]
    return {"name": event.name, "attributes": attributes}


def _span(span: ReadableSpan, by_id: dict[int, int]) -> dict[str, Any]:
    parent = span.parent
    if parent is None:
        relation: Any = None
    elif parent.span_id in by_id:
        relation = ("child of span", by_id[parent.span_id])
    else:
        relation = ("remote", f"{parent.trace_id:032x}", f"{parent.span_id:016x}", parent.is_remote)
    return {
        "name": span.name,
        "kind": span.kind,
        "scope": (span.instrumentation_scope.name, span.instrumentation_scope.version)
        if span.instrumentation_scope
        else None,
        "schema_url": span.instrumentation_scope.schema_url if span.instrumentation_scope else None,
        "parent": relation,
        "same trace as incoming": f"{span.context.trace_id:032x}" == TRACE_ID,
        "attributes": dict(span.attributes or {}),
        "status": (span.status.status_code, span.status.description),
        "events": [_event(e) for e in span.events],
    }


def _spans(telemetry: CapturedTelemetry) -> list[dict[str, Any]]:
    spans = sorted(telemetry.spans(), key=lambda s: s.start_time or 0)
    by_id = {s.context.span_id: i for i, s in enumerate(spans)}
    return [_span(s, by_id) for s in spans]


def _streams(telemetry: CapturedTelemetry) -> dict[tuple[str, str | None, str], dict[str, Any]]:
    streams: dict[tuple[str, str | None, str], dict[str, Any]] = {}
    data = telemetry.metric_reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope
            for metric in scope_metrics.metrics:
                if not metric.name.startswith("http."):
                    continue
                points = []
                for point in metric.data.data_points:
                    points.append(
                        (
                            sorted((point.attributes or {}).items()),
                            getattr(point, "count", None),
                            getattr(point, "value", None),
                            tuple(getattr(point, "explicit_bounds", ()) or ()),
                        )
                    )
                streams[(scope.name, scope.version, metric.name)] = {
                    "unit": metric.unit,
                    "description": metric.description,
                    "kind": type(metric.data).__name__,
                    "monotonic": getattr(metric.data, "is_monotonic", None),
                    "temporality": getattr(metric.data, "aggregation_temporality", None),
                    "points": sorted(points, key=repr),
                }
    return streams


def _run(middleware: str, capture_query: bool) -> tuple[list[dict[str, Any]], dict[Any, Any]]:
    with capture_telemetry(
        http_instrumentation=middleware, capture_headers=list(HEADERS), capture_query=capture_query
    ) as telemetry:
        _drive(_app())
        return _spans(telemetry), _streams(telemetry)


@pytest.fixture(autouse=True)
def _quiet_flask_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="tests.integrations.test_flask_parity")


@pytest.mark.parametrize(
    ("capture_query", "contrib_variables"),
    [(False, False), (True, False), (False, True), (False, "all-methods")],
    ids=["no-query", "capture-query", "contrib-capture-variables", "capture-all-methods"],
)
def test_same_spans_and_metric_streams_as_contrib(
    capture_query: bool, contrib_variables: bool | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Span names, kinds, parents, attributes, status, events and metric streams equal contrib's, request by request."""
    all_methods = contrib_variables == "all-methods"
    if all_methods:  # unknown methods kept as they are instead of _OTHER (contrib's variable, honoured by both)
        monkeypatch.setenv("OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS", "true")
        contrib_variables = False
    if contrib_variables:  # contrib's own header-capture variables, which both middlewares honour
        monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", ".*")
        monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", "content-.*")
    contrib_spans, contrib_streams = _run("contrib", capture_query)
    obskit_spans, obskit_streams = _run("obskit", capture_query)

    # The scenario covers what it claims to (so that equality below is not vacuous).
    names = [s["name"] for s in contrib_spans]
    assert "GET /items/<int:item_id>" in names
    assert {"GET", "GET /boom", "POST /users/<name>/orders/<int:order>", "inference parity"} <= set(names)
    assert ("FOO" if all_methods else "HTTP") in names  # the unknown method FOO
    assert not any("healthz" in str(s["attributes"].get("url.path")) for s in contrib_spans)
    assert any(s["parent"] and s["parent"][0] == "remote" for s in contrib_spans)
    assert any(s["events"] for s in contrib_spans)
    assert any("http.request.header.authorization" in s["attributes"] for s in contrib_spans)
    assert any("user_agent.synthetic.type" in s["attributes"] for s in contrib_spans)
    assert any("http.request.header.user_agent" in s["attributes"] for s in contrib_spans) is contrib_variables
    assert any("http.response.header.content_type" in s["attributes"] for s in contrib_spans) is contrib_variables
    assert any("url.query" in s["attributes"] for s in contrib_spans) is capture_query
    assert {key[2] for key in contrib_streams} == {"http.server.request.duration", "http.server.active_requests"}

    assert len(obskit_spans) == len(contrib_spans)
    for theirs, ours in zip(contrib_spans, obskit_spans, strict=True):
        assert ours == theirs
    assert obskit_streams == contrib_streams


def _metrics_only(middleware: str, escape: bool = False) -> dict[Any, Any]:
    """The HTTP metric streams of the parity scenario with traces off, as init() wires metrics-only mode."""
    from opentelemetry import trace

    from obskit import _guard
    from obskit._integrations import flask as flask_integration

    with capture_telemetry(auto_instrument=False, capture_headers=list(HEADERS)) as telemetry:
        app = _app()
        flask_integration.instrument(app, trace.NoOpTracerProvider(), _guard.current(), ("/healthz",), middleware)
        _drive(app)
        if escape:
            app.testing = True  # PROPAGATE_EXCEPTIONS: no response at all, the exception reaches the server
            with pytest.raises(ZeroDivisionError, match="parity boom"):
                app.test_client().get("/boom")
        assert [s.name for s in telemetry.spans()] == ["inference parity"] * 6  # the stage spans only
        return _streams(telemetry)


def _durations(streams: dict[Any, Any]) -> dict[tuple[tuple[str, Any], ...], int]:
    [duration] = [v for k, v in streams.items() if k[2] == "http.server.request.duration"]
    return {tuple(point[0]): point[1] for point in duration["points"]}


def test_metrics_only_same_metric_streams_as_contrib() -> None:
    """Traces off: the same HTTP metric streams as contrib's, point by point (obskit's metrics-only path)."""
    contrib = _metrics_only("contrib")
    ours = _metrics_only("obskit")
    attributes = [dict(key) for key in _durations(contrib)]
    # The scenario covers what it claims to: routes, an unmatched path, 5xx, 405, https, the excluded path.
    assert {a.get("http.route") for a in attributes} >= {"/items/<int:item_id>", "/users/<name>/orders/<int:order>"}
    assert {a.get("http.response.status_code") for a in attributes} == {200, 201, 404, 405, 500}
    assert {a.get("url.scheme") for a in attributes} == {"http", "https"}
    assert sum(_durations(contrib).values()) == 10  # the 11 requests of _drive() but /healthz
    assert ours == contrib


def test_metrics_only_exception_escaping_flask_is_recorded() -> None:
    """Traces off, PROPAGATE_EXCEPTIONS: the request without a response is recorded with its exception's type
    (contrib records nothing for it), and nothing else changes."""
    before = _durations(_metrics_only("obskit"))
    after = _durations(_metrics_only("obskit", escape=True))
    escaped = (
        ("error.type", "ZeroDivisionError"),
        ("http.request.method", "GET"),
        ("http.route", "/boom"),
        ("url.scheme", "http"),
    )
    assert after == {**before, escaped: 1}


# ---------------------------------------------------------------------------------------------------------------
# obskit's middleware beyond what contrib does.


def test_metrics_only_no_span_and_same_metrics() -> None:
    """With traces off (a no-op tracer) no span is made and the HTTP metrics are still recorded."""
    from opentelemetry import trace

    from obskit import _guard
    from obskit._integrations import flask as flask_integration

    with capture_telemetry(auto_instrument=False) as telemetry:
        app = _app()
        # What init() hands the integration in metrics-only mode: a no-op tracer provider, the guarded meters.
        flask_integration.instrument(app, trace.NoOpTracerProvider(), _guard.current(), (), "obskit")
        client = app.test_client()
        assert client.get("/items/1").status_code == 200
        assert client.get("/boom").status_code == 500
        assert [s.name for s in telemetry.spans()] == ["inference parity"]  # the stage's own span only
        duration = telemetry.metric("http.server.request.duration")
        assert duration.count(route="/items/<int:item_id>", status_code=200) == 1
        assert duration.count(route="/boom", status_code=500, attributes={"error.type": "500"}) == 1


def test_span_current_in_view_and_logs_carry_trace_id(caplog: pytest.LogCaptureFixture) -> None:
    """The server span is current while the view runs: its log records carry the span's trace id."""
    seen: list[str] = []
    with capture_telemetry() as telemetry:
        app = Flask(__name__)

        @app.get("/log")
        def log() -> str:
            logging.getLogger("parity.view").warning("in view")
            seen.append(getattr(caplog.records[-1], "trace_id", ""))
            return "ok"

        caplog.set_level(logging.WARNING, logger="parity.view")
        assert app.test_client().get("/log", headers={"traceparent": TRACEPARENT}).status_code == 200
        [span] = telemetry.spans(name="GET /log")
        assert f"{span.context.trace_id:032x}" == TRACE_ID
        assert seen == [TRACE_ID]


def test_exception_propagating_out_of_flask_is_recorded() -> None:
    """Under PROPAGATE_EXCEPTIONS the app's own exception reaches the caller unchanged, and is recorded."""
    with capture_telemetry() as telemetry:
        app = _app()
        app.testing = True
        with pytest.raises(ZeroDivisionError, match="parity boom"):
            app.test_client().get("/boom")
        [span] = telemetry.spans(name="GET /boom")
        assert span.attributes is not None
        assert span.attributes["error.type"] == "ZeroDivisionError"
        assert [e.name for e in span.events] == ["exception"]
        duration = telemetry.metric("http.server.request.duration")
        assert duration.count(route="/boom", attributes={"error.type": "ZeroDivisionError"}) == 1


def test_obskit_failure_is_swallowed_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure inside obskit's middleware never reaches the request: it is counted as an internal error."""
    from obskit._integrations import _wsgi

    def broken(*_args: Any) -> None:
        raise RuntimeError("obskit bug")

    previous = _safety.set_reraise(False)
    try:
        monkeypatch.setattr(_wsgi.Middleware, "_attributes", broken)
        monkeypatch.setattr(_wsgi.ServerMetrics, "duration", broken)
        with capture_telemetry():
            before = _safety.internal_error_count()
            response = _app().test_client().get("/items/2")
            assert response.status_code == 200
            assert response.get_json() == {"id": 4}
            assert _safety.internal_error_count() - before == 2
    finally:
        _safety.set_reraise(previous)


def test_guard_overflow_counted_per_request() -> None:
    """A route past the label limit is recorded as _OTHER and counted at every request, as without the cache."""
    with capture_telemetry(max_label_values=2) as telemetry:
        app = Flask(__name__)
        for index in range(3):
            app.add_url_rule(f"/r{index}", f"r{index}", lambda: "ok")
        client = app.test_client()
        for path in ("/r0", "/r1", "/r2", "/r2", "/r2"):
            assert client.get(path).status_code == 200
        duration = telemetry.metric("http.server.request.duration")
        assert duration.count(route="_OTHER") == 3
        overflow = telemetry.metric("obskit.cardinality.overflow")
        assert (
            overflow.value(
                attributes={"obskit.metric": "http.server.request.duration", "obskit.attribute": "http.route"}
            )
            == 3
        )


@pytest.mark.parametrize("traces", [True, False], ids=["full", "metrics-only"])
def test_active_requests_overflow_counted_per_request(traces: bool) -> None:
    """A method past the label limit on http.server.active_requests is counted as an overflow at every request
    (its series is not cached, and neither is the request info that holds it)."""
    from opentelemetry import trace

    from obskit import _guard
    from obskit._integrations import flask as flask_integration

    with capture_telemetry(auto_instrument=False, max_label_values=1) as telemetry:
        app = _app()
        provider = trace.get_tracer_provider() if traces else trace.NoOpTracerProvider()
        flask_integration.instrument(app, provider, _guard.current(), (), "obskit")
        client = app.test_client()
        for _ in range(2):
            assert client.get("/items/1").status_code == 200
        for order in range(3):
            assert client.post(f"/users/ada/orders/{order}").status_code == 201
        overflow = telemetry.metric("obskit.cardinality.overflow")
        key = {"obskit.metric": "http.server.active_requests", "obskit.attribute": "http.request.method"}
        assert overflow.value(attributes=key) == 3


def test_status_lines_as_contrib_reads_them() -> None:
    """Status code and error.type of a WSGI status line: 5xx and codes below 100 are errors, a non-number too."""
    from opentelemetry import trace
    from opentelemetry.sdk.metrics import MeterProvider

    from obskit._integrations._wsgi import Middleware

    middleware = Middleware(trace.NoOpTracerProvider(), MeterProvider(), (), ("s", "1", ""), False, ())
    lines = ["200 OK", "404 NOT FOUND", "503 SERVICE UNAVAILABLE", "099 LOW", "abc", "200 OK"]
    assert [middleware.status(line) for line in lines] == [
        (200, None),
        (404, None),
        (503, "503"),
        (99, "099"),
        (None, "abc"),
        (200, None),
    ]
    assert middleware._statuses["503 SERVICE UNAVAILABLE"] == (503, "503")


def test_metrics_through_another_meter_provider() -> None:
    """A meter provider other than obskit's: each series goes through the API instrument (ApiSeries)."""
    from opentelemetry import trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from obskit._integrations import flask as flask_integration

    reader = InMemoryMetricReader()
    app = _app()
    flask_integration.instrument(app, trace.NoOpTracerProvider(), MeterProvider(metric_readers=[reader]), (), "obskit")
    client = app.test_client()
    assert client.get("/items/1").status_code == 200
    assert client.get("/boom").status_code == 500
    data = reader.get_metrics_data()
    assert data is not None
    points = {
        metric.name: list(metric.data.data_points)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }
    routes = {(p.attributes or {}).get("http.route"): p.count for p in points["http.server.request.duration"]}
    assert routes == {"/items/<int:item_id>": 1, "/boom": 1}
    assert [p.value for p in points["http.server.active_requests"]] == [0]  # +1 and -1 on one series
