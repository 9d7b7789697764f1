"""A real uvicorn process serving examples/fastapi_app.py, exporting to a real OTLP receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from obskit.testing import OtlpReceiver

from ._servers import Server, free_port, serve, telemetry_env, uvicorn

pytestmark = pytest.mark.e2e
APP = "examples.fastapi_app:app"
PREDICT_BODY = {"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}


@pytest.fixture(scope="module")
def rx() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def server(rx: OtlpReceiver) -> Iterator[Server]:
    port = free_port()
    with serve(uvicorn(APP, port), port, telemetry_env(rx.grpc_endpoint, IRIS_FAIL_EVERY="0")) as srv:
        yield srv


def test_predict_trace_has_stage_children(server: Server, rx: OtlpReceiver):
    """POST /predict yields one server span with the three stage spans as its children, in one trace."""
    with server.client() as client:
        response = client.post("/predict", json=PREDICT_BODY)
    assert response.status_code == 200
    assert [p["label"] for p in response.json()["predictions"]] == ["setosa", "virginica"]
    root = rx.wait_for_span("POST /predict", timeout=10)
    assert root.kind == "SERVER"
    assert root.attributes["http.route"] == "/predict"
    assert root.attributes["http.request.method"] == "POST"
    assert root.attributes["http.response.status_code"] == 200
    assert root.resource["service.name"] == "iris-classifier"
    children = rx.wait_for_spans(
        3, timeout=10, predicate=lambda s: s.trace_id == root.trace_id and s.kind == "INTERNAL"
    )
    by_name = {s.name: s for s in children}
    assert set(by_name) == {"preprocess iris-centroid", "inference iris-centroid", "postprocess iris-centroid"}
    for span in children:
        assert span.parent_span_id == root.span_id
        assert span.attributes["model.name"] == "iris-centroid"
        assert span.attributes["model.version"] == "1"
    assert by_name["preprocess iris-centroid"].attributes["model.batch_size"] == 2
    assert by_name["inference iris-centroid"].attributes["model.batch_size"] == 2
    assert by_name["inference iris-centroid"].attributes["model.stage"] == "inference"
    # No ASGI per-message spans.
    assert not [s for s in rx.spans() if s.trace_id == root.trace_id and s.name.endswith(("http send", "http receive"))]


def test_red_metrics_attributes_and_units(server: Server, rx: OtlpReceiver):
    """http.server.request.duration carries exactly the SPEC attributes, in seconds, with exemplars."""
    with server.client() as client:
        assert client.post("/predict", json=PREDICT_BODY).status_code == 200
    point = rx.wait_for_metric("http.server.request.duration", timeout=10, attributes={"http.route": "/predict"})
    assert point.unit == "s"
    assert point.kind == "histogram"
    assert set(point.attributes) == {"http.request.method", "http.route", "http.response.status_code", "url.scheme"}
    assert point.explicit_bounds[:3] == (0.005, 0.01, 0.025)
    active = rx.wait_for_metric("http.server.active_requests", timeout=10)
    assert set(active.attributes) <= {"http.request.method", "url.scheme"}
    stage = rx.wait_for_metric(
        "obskit.model.duration", timeout=10, attributes={"model.stage": "inference", "model.name": "iris-centroid"}
    )
    assert stage.unit == "s"
    assert stage.count >= 1
    exemplar_point = rx.wait_for_metric(
        "http.server.request.duration", timeout=10, predicate=lambda p: bool(p.exemplars)
    )
    assert len(exemplar_point.exemplars[0]["trace_id"]) == 32


def test_unmatched_route_is_named_by_method_only(server: Server, rx: OtlpReceiver):
    """A 404 on an unknown path never puts the raw path in a span name or a metric attribute."""
    with server.client() as client:
        assert client.get("/no/such/path/12345").status_code == 404
    span = rx.wait_for_span("GET", timeout=10)
    assert "http.route" not in span.attributes
    assert span.attributes["http.response.status_code"] == 404
    point = rx.wait_for_metric(
        "http.server.request.duration", timeout=10, attributes={"http.response.status_code": 404}
    )
    assert "http.route" not in point.attributes
    assert all("12345" not in s.name for s in rx.spans())
    assert all("12345" not in str(p.attributes) for p in rx.metric_points())


def test_templated_route_not_raw_path(server: Server, rx: OtlpReceiver):
    """A route with a path parameter is named by its template."""
    with server.client() as client:
        assert client.get("/models/iris-centroid").status_code == 200
    span = rx.wait_for_span("GET /models/{name}", timeout=10)
    assert span.attributes["http.route"] == "/models/{name}"


def test_excluded_urls_produce_nothing(server: Server, rx: OtlpReceiver):
    """Health checks produce no span and no metric (the readiness poll already hit /healthz)."""
    with server.client() as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
        assert client.get("/models/x").status_code == 404  # a marker request after the health checks
    rx.wait_for_span(
        "GET /models/{name}", timeout=10, predicate=lambda s: s.attributes.get("http.response.status_code") == 404
    )
    assert not [s for s in rx.spans() if "healthz" in s.name or "healthz" in str(s.attributes)]
    assert not [p for p in rx.metric_points() if "healthz" in str(p.attributes)]


def test_traceparent_is_continued(server: Server, rx: OtlpReceiver):
    """An incoming W3C traceparent makes the server span a child of the caller's span."""
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = "00f067aa0ba902b7"
    headers = {"traceparent": f"00-{trace_id}-{parent}-01", "baggage": "tenant=acme"}
    with server.client() as client:
        assert client.post("/predict", json=PREDICT_BODY, headers=headers).status_code == 200
    span = rx.wait_for_span("POST /predict", timeout=10, predicate=lambda s: s.trace_id == trace_id)
    assert span.parent_span_id == parent
    # Headers are not recorded unless opted in.
    assert not [k for k in span.attributes if k.startswith("http.request.header.")]


def test_streaming_time_to_first_output(server: Server, rx: OtlpReceiver):
    """A streamed response's stage span ends with the stream and records time to first output."""
    with server.client() as client:
        response = client.get("/stream", params={"n": 4})
    assert response.text == "token-0 token-1 token-2 token-3 "
    span = rx.wait_for_span("generate iris-centroid", timeout=10)
    assert span.attributes["model.stage"] == "generate"
    assert span.duration_s >= 4 * 0.004
    point = rx.wait_for_metric("obskit.model.time_to_first_output", timeout=10, attributes={"model.stage": "generate"})
    assert point.count >= 1
    assert point.sum < span.duration_s


def test_logs_carry_trace_context(server: Server, rx: OtlpReceiver):
    """A log record emitted while serving a request is exported with that request's trace id."""
    with server.client() as client:
        assert client.post("/predict", json=PREDICT_BODY).status_code == 200
    record = rx.wait_for_log(body="predicted 2 rows", timeout=10)
    assert len(record.trace_id) == 32
    assert record.trace_id != "0" * 32
    root = rx.wait_for_span("POST /predict", timeout=10, predicate=lambda s: s.trace_id == record.trace_id)
    assert record.span_id in {root.span_id} | {s.span_id for s in rx.spans() if s.trace_id == root.trace_id}
    assert record.severity_text == "INFO"
    assert "trace_id" not in record.attributes


def test_process_metrics_exported(server: Server, rx: OtlpReceiver):
    """The semantic-convention process.* metrics arrive with the worker's resource."""
    for name in (
        "process.cpu.time",
        "process.memory.usage",
        "process.thread.count",
        "process.open_file_descriptor.count",
    ):
        point = rx.wait_for_metric(name, timeout=10)
        assert point.resource["service.name"] == "iris-classifier"
        assert point.resource["process.pid"] == server.pid


def test_error_path(rx: OtlpReceiver):
    """A failing inference gives a 500 server span and an error.type on the stage span and metric."""
    port = free_port()
    env = telemetry_env(rx.grpc_endpoint, IRIS_FAIL_EVERY="1")
    with serve(uvicorn(APP, port), port, env) as srv, srv.client() as client:
        assert client.post("/predict", json=PREDICT_BODY).status_code == 500
        stage = rx.wait_for_span("inference iris-centroid", timeout=10, predicate=lambda s: s.status_code == "ERROR")
        assert stage.attributes["error.type"] == "RuntimeError"
        assert stage.status_message
        assert [name for name, _ in stage.events] == ["exception"]
        root = rx.wait_for_span("POST /predict", timeout=10, predicate=lambda s: s.trace_id == stage.trace_id)
        assert root.attributes["http.response.status_code"] == 500
        assert root.status_code == "ERROR"
        point = rx.wait_for_metric(
            "obskit.model.duration", timeout=10, attributes={"model.stage": "inference", "error.type": "RuntimeError"}
        )
        assert point.count >= 1
        http_point = rx.wait_for_metric(
            "http.server.request.duration", timeout=10, attributes={"http.response.status_code": 500}
        )
        assert http_point.attributes["error.type"] == "500"
