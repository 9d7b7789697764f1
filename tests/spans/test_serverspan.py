"""Server spans made by _serverspan reach the collector exactly as the SDK span path would send them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from flask import Flask
from opentelemetry import trace

import obskit
from obskit import _serverspan, testing
from obskit.testing import OtlpReceiver

from ._wire import received

SIGNAL_SPANS = "spans"
REMOTE_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
REMOTE_PARENT = "00f067aa0ba902b7"
REQUESTS = 7  # each makes one server span; /stage also one stage span


def _init(rx: OtlpReceiver) -> obskit.Handle:
    return obskit.init(endpoint=rx.grpc_endpoint, protocol="grpc", service_name="serverspan-test", system_metrics=False)


@obskit.inference(model="m", version="1")
def _predict(n: int) -> int:
    return n


def _views(seen: list[type]) -> dict[str, Callable[..., Any]]:
    """The handlers both apps serve (the same functions: Flask and FastAPI take these signatures alike)."""

    def item(item_id: int) -> dict[str, int]:
        seen.append(type(trace.get_current_span()))
        return {"id": item_id}

    def boom() -> str:
        raise ValueError("no model")

    def noted() -> str:
        span = trace.get_current_span()
        span.set_attribute("app.tenant", "acme")
        span.add_event("cache.miss", {"key.count": 2})
        return "ok"

    def stage() -> dict[str, int]:
        return {"n": _predict(3)}

    return {"/boom": boom, "/noted": noted, "/stage": stage, "{item}": item}


def _flask_app(seen: list[type]) -> Flask:
    app = Flask(__name__)
    views = _views(seen)
    app.get("/items/<int:item_id>")(views.pop("{item}"))
    for path, view in views.items():
        app.get(path)(view)
    app.get("/busy")(lambda: ("busy", 503))
    return app


def _fastapi_app(seen: list[type]) -> FastAPI:
    from fastapi.responses import PlainTextResponse

    app = FastAPI()
    views = _views(seen)
    app.get("/items/{item_id}")(views.pop("{item}"))
    for path, view in views.items():
        app.get(path)(view)
    app.get("/busy")(lambda: PlainTextResponse("busy", status_code=503))
    return app


def _drive(framework: str, seen: list[type]) -> None:
    """The same requests through an app created after init() (so obskit's middleware instruments it)."""
    get: Callable[..., Any]
    if framework == "flask":
        get = _flask_app(seen).test_client().get
    else:
        get = TestClient(_fastapi_app(seen), raise_server_exceptions=False).get
    assert get("/items/7").status_code == 200
    remote = {"traceparent": f"00-{REMOTE_TRACE}-{REMOTE_PARENT}-01"}
    assert get("/items/8", headers=remote).status_code == 200
    assert get("/boom").status_code == 500
    assert get("/busy").status_code == 503
    assert get("/missing").status_code == 404
    assert get("/noted").status_code == 200
    assert get("/stage").status_code == 200


@pytest.mark.parametrize("framework", ["flask", "fastapi"])
def test_fast_server_spans_match_the_sdk_path_on_the_wire(
    framework: str, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same requests with server spans on and off: identical spans at the receiver, every span accounted."""
    handle = _init(receiver)
    seen: list[type] = []
    _drive(framework, seen)
    assert handle.force_flush(timeout=10)
    fast = received(receiver, REQUESTS + 1, REMOTE_TRACE)
    stats = handle.telemetry_stats()[SIGNAL_SPANS]
    assert stats.produced == stats.exported == REQUESTS + 1
    assert stats.balanced
    assert seen == [_serverspan.ServerSpan, _serverspan.ServerSpan]  # the fast path was taken

    obskit.shutdown()
    testing._reset()
    receiver.clear()
    monkeypatch.setattr(_serverspan.ServerSpans, "start", lambda self, *args, **kwargs: None)
    handle = _init(receiver)
    seen.clear()
    _drive(framework, seen)
    assert handle.force_flush(timeout=10)
    assert seen
    assert _serverspan.ServerSpan not in seen
    sdk = received(receiver, REQUESTS + 1, REMOTE_TRACE)
    assert fast == sdk

    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in fast:
        by_name.setdefault(span["name"], []).append(span)
    local, remote = by_name["GET /items/{item_id}" if framework == "fastapi" else "GET /items/<int:item_id>"]
    assert not local["remote_trace"]
    assert not local["parent"]
    assert remote["remote_trace"]
    assert remote["parent"] == REMOTE_PARENT
    assert dict(local["attributes"])["http.response.status_code"] == 200
    [boom] = by_name["GET /boom"]
    assert boom["status"][0].endswith("ERROR")
    assert [name for name, _ in boom["events"]] == ["exception"]
    [busy] = by_name["GET /busy"]
    assert busy["status"][0].endswith("ERROR")
    assert dict(busy["attributes"])["error.type"] == "503"
    [noted] = by_name["GET /noted"]
    assert dict(noted["attributes"])["app.tenant"] == "acme"
    assert noted["events"] == [("cache.miss", ["key.count"])]
    assert by_name["inference m"][0]["parent"] == "GET /stage"
    assert all(span["ordered_times"] for span in fast)


def test_an_application_processor_gets_sdk_server_spans(receiver: OtlpReceiver) -> None:
    """A processor the application adds sees every server span as the SDK's span: the fast path steps aside."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    _init(receiver)
    exported = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exported))  # type: ignore[attr-defined]
    seen: list[type] = []
    _drive("fastapi", seen)
    assert seen
    assert _serverspan.ServerSpan not in seen
    names = [span.name for span in exported.get_finished_spans()]
    assert names.count("GET /items/{item_id}") == 2
    assert len(names) == REQUESTS + 1


def test_a_query_string_capture_takes_the_sdk_path(receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Attributes redaction may have to rewrite (a captured query string) go through the SDK span and redaction."""
    monkeypatch.setenv("OBSKIT_CAPTURE_QUERY", "true")
    handle = _init(receiver)
    seen: list[type] = []
    client = _flask_app(seen).test_client()
    assert client.get("/items/1?token=s3cret&page=2").status_code == 200
    assert handle.force_flush(timeout=10)
    assert seen
    assert _serverspan.ServerSpan not in seen
    [span] = receiver.wait_for_spans(1, timeout=10)
    query = span.attributes.get("url.query")
    assert query is not None
    assert "s3cret" not in str(query)
    assert "page=2" in str(query)


def test_spans_follow_the_resource_of_a_forked_worker(receiver: OtlpReceiver) -> None:
    """A worker forked from a preloaded master gets a new resource: later server and stage spans carry it.

    The SDK's at-fork hook merges the new identity into the provider's resource; here it is merged directly.
    """
    from opentelemetry.sdk.resources import Resource

    handle = _init(receiver)
    seen: list[type] = []
    client = _flask_app(seen).test_client()
    assert client.get("/stage").status_code == 200  # resolves the stage and the middleware before the "fork"
    trace.get_tracer_provider()._update_resource(Resource({"service.instance.id": "worker-2"}))  # type: ignore[attr-defined]
    assert client.get("/stage").status_code == 200
    assert client.get("/items/3").status_code == 200
    assert handle.force_flush(timeout=10)
    assert seen == [_serverspan.ServerSpan]
    spans = receiver.wait_for_spans(5, timeout=10)
    identities = [(s.name, s.resource.get("service.instance.id")) for s in spans]
    assert sum(identity == "worker-2" for _, identity in identities) == 3, identities
    assert {name for name, identity in identities if identity == "worker-2"} == {
        "GET /stage",
        "inference m",
        "GET /items/<int:item_id>",
    }


def test_an_error_status_with_a_description_on_the_fast_path(receiver: OtlpReceiver) -> None:
    """The one status a light server span keeps itself (an ERROR with a description) arrives as the SDK's does."""
    from opentelemetry.trace import SpanKind, Status, StatusCode

    from obskit._tracer import CleanAttributes

    handle = _init(receiver)
    tracer = trace.get_tracer_provider().get_tracer("obskit.test")
    spans = _serverspan.server_spans(tracer)
    assert spans is not None
    made = []
    for fast in (True, False):
        attributes = CleanAttributes({"http.request.method": "GET", "app.path": "fast" if fast else "sdk"})
        span = spans.start("GET", None, SpanKind.SERVER, attributes) if fast else None
        if span is None:
            span = tracer.start_span("GET", None, SpanKind.SERVER, attributes)
        made.append(type(span))
        span.set_status(Status(StatusCode.ERROR, "Non-integer HTTP status: abc"))
        span.end()
    assert made[0] is _serverspan.ServerSpan
    assert made[1] is not _serverspan.ServerSpan
    assert handle.force_flush(timeout=10)
    got = {dict(s.attributes)["app.path"]: (s.status_code, s.status_message) for s in receiver.wait_for_spans(2)}
    assert got["fast"] == got["sdk"]
    assert got["fast"][1] == "Non-integer HTTP status: abc"


def test_attributes_set_again_move_last_as_in_the_sdk_store() -> None:
    """The fast path's attribute store orders keys as the SDK's BoundedAttributes does (a key set again moves last)."""
    from opentelemetry.attributes import BoundedAttributes

    store: dict[str, Any] = {"http.route": "/a", "url.path": "/a"}
    _serverspan._merge(store, {"http.route": "/b", "http.response.status_code": 200})
    sdk = BoundedAttributes(attributes={"http.route": "/a", "url.path": "/a"}, immutable=False)
    for key, value in {"http.route": "/b", "http.response.status_code": 200}.items():
        sdk[key] = value
    assert (
        list(store.items())
        == list(sdk.items())
        == [
            ("url.path", "/a"),
            ("http.route", "/b"),
            ("http.response.status_code", 200),
        ]
    )
