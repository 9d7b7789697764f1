from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from time import perf_counter
from typing import Any

import httpx
import pytest
from flask import Flask, Response, abort, stream_with_context
from opentelemetry import trace
from opentelemetry.trace import StatusCode

import obskit
from obskit.testing import OtlpReceiver, capture_telemetry


def _app() -> Flask:
    app = Flask(__name__)

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/healthz")
    def health() -> str:
        return "ok"

    return app


def test_flask_app_after_init_named_by_rule() -> None:
    """A Flask app made after init() is traced, span named by its URL rule, health checks excluded."""
    with capture_telemetry() as telemetry:
        client = _app().test_client()
        assert client.get("/items/3").status_code == 200
        assert client.get("/healthz").status_code == 200
        assert client.get("/nothing/here/42").status_code == 404
        names = sorted(s.name for s in telemetry.spans())
        assert names == ["GET", "GET /items/<int:item_id>"]
        metric = telemetry.metric("http.server.request.duration")
        assert metric.count() == 2
        routes = {a.get("http.route") for a in metric.attributes()}
        assert routes == {"/items/<int:item_id>", None}


def test_flask_instrument_twice_is_noop() -> None:
    """instrument_app() twice on a Flask app records each request once."""
    app = _app()
    with capture_telemetry(auto_instrument=False) as telemetry:
        obskit.instrument_app(app)
        obskit.instrument_app(app)
        app.test_client().get("/items/1")
        assert len(telemetry.spans(name="GET /items/<int:item_id>")) == 1


def test_custom_excluded_urls() -> None:
    """OBSKIT_EXCLUDED_URLS replaces the defaults: /healthz is then traced, /items/ is not."""
    with capture_telemetry(excluded_urls=["^/items/"]) as telemetry:
        client = _app().test_client()
        client.get("/items/1")
        client.get("/healthz")
        assert [s.name for s in telemetry.spans()] == ["GET /healthz"]


# ---------------------------------------------------------------------------------------------------------------
# Streamed responses: the request lasts until the body is sent (SPEC §3: RED metrics and traces cover streaming).


@obskit.inference(model="tok")
def _token(i: int) -> str:
    return f"t{i} "


def _stream_app(marks: list[float] | None = None) -> Flask:
    """/stream yields a token per decorated call; /stream_ctx the same under stream_with_context; /fail breaks."""
    app = Flask(__name__)

    def tokens() -> Iterator[str]:
        for i in range(3):
            if marks is not None:
                marks.append(perf_counter())
            yield _token(i)

    @app.get("/stream")
    def stream() -> Response:
        return Response(tokens(), mimetype="text/plain")

    @app.get("/stream_ctx")
    def stream_ctx() -> Response:
        return Response(stream_with_context(tokens()), mimetype="text/plain")

    @app.get("/fail")
    def fail() -> Response:
        def body() -> Iterator[str]:
            yield "first "
            raise RuntimeError("model crashed mid-stream")

        return Response(body(), mimetype="text/plain")

    return app


def _metrics_only(app: Flask) -> None:
    """What init() does with traces off: a no-op tracer provider, obskit's guarded meters (metrics-only path)."""
    from opentelemetry import trace

    from obskit import _guard
    from obskit._integrations import flask as flask_integration

    flask_integration.instrument(app, trace.NoOpTracerProvider(), _guard.current(), (), "obskit")


@pytest.mark.parametrize("path", ["/stream", "/stream_ctx"])
def test_stream_span_and_metrics_last_until_the_body_is_sent(path: str) -> None:
    """A streamed body keeps the request open (span unfinished, active_requests 1) until its last chunk is read."""
    marks: list[float] = []
    with capture_telemetry() as telemetry:
        response = _stream_app(marks).test_client().get(path)  # werkzeug's client has read the first chunk
        assert response.status_code == 200
        assert telemetry.spans(name=f"GET {path}") == []
        assert telemetry.metric("http.server.active_requests").value() == 1
        assert telemetry.metric("http.server.request.duration").count() == 0
        assert response.get_data(as_text=True) == "t0 t1 t2 "
        [server] = telemetry.spans(name=f"GET {path}")
        assert telemetry.metric("http.server.active_requests").value() == 0
        duration = telemetry.metric("http.server.request.duration")
        assert duration.count(route=path, status_code=200) == 1
        assert "error.type" not in duration.attributes()[0]
        assert duration.sum() >= marks[-1] - marks[0]  # from before the first token to after the last
        assert server.status.status_code is StatusCode.UNSET
        response.close()  # the server's close() after the end: nothing recorded twice
        assert telemetry.metric("http.server.request.duration").count() == 1
        assert len(telemetry.spans(name=f"GET {path}")) == 1


@pytest.mark.parametrize("path", ["/stream", "/stream_ctx"])
def test_stage_spans_made_while_streaming_are_children_of_the_server_span(path: str) -> None:
    """Decorated calls made by the body as the server iterates it are children of the server span, ended before it."""
    with capture_telemetry() as telemetry:
        assert _stream_app().test_client().get(path).get_data(as_text=True) == "t0 t1 t2 "
        [server] = telemetry.spans(name=f"GET {path}")
        stages = telemetry.spans(name="inference tok")
        assert len(stages) == 3
        assert {(s.context.trace_id, s.parent.span_id if s.parent else None) for s in stages} == {
            (server.context.trace_id, server.context.span_id)
        }
        assert server.end_time is not None
        assert all(s.end_time is not None and s.end_time <= server.end_time for s in stages)
        assert not trace.get_current_span().get_span_context().is_valid  # nothing left attached


def test_stream_failing_midway_is_an_error() -> None:
    """An exception raised by the body after the 200: error.type on the span (ERROR, exception event) and metric."""
    with capture_telemetry() as telemetry:
        response = _stream_app().test_client().get("/fail")
        assert response.status_code == 200
        with pytest.raises(RuntimeError, match="model crashed mid-stream"):
            response.get_data()
        [server] = telemetry.spans(name="GET /fail")
        assert server.status.status_code is StatusCode.ERROR
        attributes = dict(server.attributes or {})
        assert (attributes["error.type"], attributes["http.response.status_code"]) == ("RuntimeError", 200)
        assert [(e.name, dict(e.attributes or {})["exception.type"]) for e in server.events] == [
            ("exception", "RuntimeError")
        ]
        duration = telemetry.metric("http.server.request.duration")
        assert duration.attributes() == [
            {
                "http.request.method": "GET",
                "http.route": "/fail",
                "http.response.status_code": 200,
                "url.scheme": "http",
                "error.type": "RuntimeError",
            }
        ]
        assert telemetry.metric("http.server.active_requests").value() == 0


def test_stream_closed_early_ends_the_request_without_error() -> None:
    """A client gone after the first chunk: the server's close() ends the request, recorded without error.type."""
    with capture_telemetry() as telemetry:
        response = _stream_app().test_client().get("/stream")
        assert telemetry.spans(name="GET /stream") == []
        response.close()
        [server] = telemetry.spans(name="GET /stream")
        assert server.status.status_code is StatusCode.UNSET
        assert "error.type" not in (server.attributes or {})
        assert telemetry.metric("http.server.request.duration").count(status_code=200) == 1
        assert telemetry.metric("http.server.active_requests").value() == 0


def test_metrics_only_stream_recorded_when_the_body_is_sent() -> None:
    """Traces off: the duration covers the stream, active_requests stays 1 while streaming; a failure has error.type."""
    marks: list[float] = []
    with capture_telemetry(auto_instrument=False) as telemetry:
        app = _stream_app(marks)
        _metrics_only(app)
        client = app.test_client()
        response = client.get("/stream_ctx")
        assert telemetry.metric("http.server.active_requests").value() == 1
        assert telemetry.metric("http.server.request.duration").count() == 0
        assert response.get_data(as_text=True) == "t0 t1 t2 "
        assert telemetry.metric("http.server.active_requests").value() == 0
        duration = telemetry.metric("http.server.request.duration")
        assert duration.count(route="/stream_ctx", status_code=200) == 1
        assert duration.sum() >= marks[-1] - marks[0]
        response.close()
        assert telemetry.metric("http.server.request.duration").count() == 1

        failing = client.get("/fail")
        with pytest.raises(RuntimeError, match="model crashed mid-stream"):
            failing.get_data()
        duration = telemetry.metric("http.server.request.duration")
        assert duration.count(route="/fail", status_code=200, attributes={"error.type": "RuntimeError"}) == 1
        assert telemetry.metric("http.server.active_requests").value() == 0
        assert {s.name for s in telemetry.spans()} == {"inference tok"}  # no server span


def test_buffered_and_error_responses_end_when_the_view_returns() -> None:
    """A buffered body, and an abort()'s error page, end with the view: nothing to read for the request to end."""
    with capture_telemetry() as telemetry:
        app = Flask(__name__)

        @app.get("/gone")
        def gone() -> str:
            abort(410)

        client = app.test_client()
        client.get("/gone")
        client.get("/items/1")
        assert sorted(s.name for s in telemetry.spans()) == ["GET", "GET /gone"]
        assert telemetry.metric("http.server.active_requests").value() == 0


_GUNICORN_APP = """
from flask import Flask, Response, stream_with_context

import obskit

obskit.init(service_name="flask-stream-e2e")
app = Flask(__name__)


@obskit.inference(model="tok")
def token(i):
    return f"t{i} "


@app.get("/stream")
def stream():
    return Response(stream_with_context(token(i) for i in range(3)), mimetype="text/plain")


@app.get("/fail")
def fail():
    def body():
        yield "first "
        raise RuntimeError("model crashed mid-stream")

    return Response(body(), mimetype="text/plain")


@app.get("/healthz")
def healthz():
    return "ok"
"""


@pytest.mark.e2e
def test_stream_under_gunicorn(receiver: OtlpReceiver, tmp_path: Path) -> None:
    """gunicorn (sync worker): the server span ends after the body's stage spans; a mid-stream failure is an error."""
    from e2e._servers import free_port, gunicorn, serve, telemetry_env

    (tmp_path / "stream_app.py").write_text(_GUNICORN_APP)
    port = free_port()
    argv = gunicorn("stream_app:app", port, "-w", "1", "--pythonpath", str(tmp_path))
    with serve(argv, port, telemetry_env(receiver.grpc_endpoint)) as server, server.client() as client:
        assert client.get("/stream").text == "t0 t1 t2 "
        with pytest.raises(httpx.RemoteProtocolError):  # the body broke off after its first chunk
            client.get("/fail")
        root = receiver.wait_for_span("GET /stream", timeout=10)
        stages = receiver.wait_for_spans(3, name="inference tok", timeout=10)
        assert {(s.trace_id, s.parent_span_id) for s in stages} == {(root.trace_id, root.span_id)}
        assert max(s.end_time_ns for s in stages) <= root.end_time_ns
        failed = receiver.wait_for_span("GET /fail", timeout=10)
        assert failed.status_code == "ERROR"
        assert failed.attributes["error.type"] == "RuntimeError"
        assert [name for name, _ in failed.events] == ["exception"]
        receiver.wait_for_metric(
            "http.server.request.duration",
            timeout=10,
            attributes={"http.route": "/fail", "http.response.status_code": 200, "error.type": "RuntimeError"},
        )


def test_an_app_wrapped_after_instrumentation_keeps_its_wrapper_when_init_runs_again() -> None:
    """A later init() moves instrumented apps to its providers, except one whose wsgi_app was wrapped after obskit's
    (restoring the original would drop the user's ProxyFix): that one warns and keeps its wrapper."""
    import warnings

    from werkzeug.middleware.proxy_fix import ProxyFix

    from obskit.exceptions import ObskitWarning

    with capture_telemetry():
        app = Flask("wrapped")
        app.wsgi_app = ProxyFix(app.wsgi_app)  # type: ignore[method-assign]
        proxied = app.wsgi_app
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with capture_telemetry():
            assert app.wsgi_app is proxied
    assert [w.category for w in caught] == [ObskitWarning]
    assert "its wsgi_app was wrapped after obskit instrumented it" in str(caught[0].message)


@pytest.mark.parametrize("traces", ["otlp", "none"])
def test_start_response_takes_exc_info_by_keyword(traces: str) -> None:
    """PEP 3333 names start_response's third parameter: a WSGI layer under obskit's may pass exc_info=..."""

    class Keyword:
        def __init__(self, app: Any) -> None:
            self.app = app

        def __call__(self, environ: Any, start_response: Any) -> Any:
            def start(status: str, headers: Any, exc_info: Any = None) -> Any:
                return start_response(status, headers, exc_info=exc_info)

            return self.app(environ, start)

    app = Flask("keyword")  # before init(): Keyword ends up inside obskit's wrapper
    app.wsgi_app = Keyword(app.wsgi_app)  # type: ignore[method-assign]

    @app.get("/ok")
    def ok() -> str:
        return "ok"

    with capture_telemetry(traces_exporter=traces) as telemetry:
        obskit.instrument_app(app)
        response = app.test_client().get("/ok")
        assert (response.status_code, response.data) == (200, b"ok")
        assert telemetry.metric("http.server.request.duration").count(route="/ok") == 1


def test_client_sent_span_values_are_cut_to_a_bound() -> None:
    """As on FastAPI: url.path, url.query and user_agent.original are kept to 8,192 characters on the span."""
    from obskit._integrations._http import MAX_CLIENT_VALUE

    with capture_telemetry(capture_query=True, capture_headers=("x-model",)) as telemetry:
        app = Flask("long")

        @app.get("/items/<item>")
        def item(item: str) -> str:
            return "ok"

        long = "x" * 20_000
        client = app.test_client()
        client.get(f"/items/{long}?q={long}", headers={"User-Agent": "agent/" + long, "x-model": long})
        [span] = telemetry.spans(name="GET /items/<item>")
        assert span.attributes is not None
        assert span.attributes["url.path"] == ("/items/" + long)[:MAX_CLIENT_VALUE]
        assert span.attributes["url.query"] == ("q=" + long)[:MAX_CLIENT_VALUE]
        assert span.attributes["user_agent.original"] == ("agent/" + long)[:MAX_CLIENT_VALUE]
        assert span.attributes["http.request.header.x_model"] == (long[:MAX_CLIENT_VALUE],)  # an opted-in header
