"""Pre-fork servers: gunicorn --preload with sync and uvicorn workers, uvicorn --workers; Flask under gunicorn."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from obskit.testing import OtlpReceiver

from ._servers import free_port, gunicorn, serve, telemetry_env, uvicorn

pytestmark = pytest.mark.e2e
BODY = {"instances": [[5.1, 3.5, 1.4, 0.2]]}


@pytest.fixture
def rx() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


def _instance_ids(rx: OtlpReceiver, metric: str = "process.memory.usage") -> dict[str, int]:
    return {p.resource["service.instance.id"]: p.resource["process.pid"] for p in rx.metric_points(metric)}


def _wait_for_instances(rx: OtlpReceiver, count: int) -> dict[str, int]:
    """Each worker exports process metrics on its own schedule: wait until ``count`` identities have reported."""
    rx.wait_for_metric("process.memory.usage", timeout=20, predicate=lambda _p: len(_instance_ids(rx)) >= count)
    return _instance_ids(rx)


def _send(url: str, n: int) -> None:
    # Separate connections, so that the kernel spreads them over the workers.
    for _ in range(n):
        response = httpx.post(url + "/predict", json=BODY, timeout=10)
        assert response.status_code == 200


@pytest.mark.parametrize(
    ("app", "worker_class"),
    [
        ("examples.flask_app:app", "sync"),
        ("examples.fastapi_app:app", "uvicorn.workers.UvicornWorker"),
    ],
)
def test_gunicorn_preload_workers_have_own_identity(rx: OtlpReceiver, app: str, worker_class: str):
    """gunicorn --preload -w 2: each worker exports under its own instance id and pid, no span twice.

    The master reports only its own process metrics (its memory matters too), never a request's telemetry.
    """
    port = free_port()
    argv = gunicorn(app, port, "--preload", "-w", "2", "-k", worker_class)
    with serve(argv, port, telemetry_env(rx.grpc_endpoint)) as srv:
        ids = _wait_for_instances(rx, 3)
        assert len(ids) == 3
        assert len(set(ids.values())) == 3, "every process has its own pid in its resource"
        workers = {instance for instance, pid in ids.items() if pid != srv.pid}
        assert len(workers) == 2
        _send(srv.url, 20)
        rx.wait_for_spans(20, name="POST /predict", timeout=15)
        assert srv.terminate() == 0
    # After shutdown every exported span is there exactly once, each from a worker.
    spans = rx.spans("POST /predict")
    assert len(spans) == 20
    assert len({s.span_id for s in spans}) == 20
    assert {s.resource["service.instance.id"] for s in spans} <= workers
    assert len(rx.spans("inference iris-centroid")) == 20
    assert not [s for s in rx.spans() if s.resource["process.pid"] == srv.pid]
    master_metrics = {p.name for p in rx.metric_points() if p.resource["process.pid"] == srv.pid}
    assert not {name for name in master_metrics if name.startswith(("http.", "obskit.model."))}
    # Workers report their own memory, not the master's (psutil is re-pointed after fork).
    memory = {p.resource["process.pid"] for p in rx.metric_points("process.memory.usage")}
    assert memory == set(ids.values())


def test_uvicorn_workers_have_own_identity(rx: OtlpReceiver):
    """uvicorn --workers 2: two processes, two instance ids, each request traced once."""
    port = free_port()
    with serve(
        uvicorn("examples.fastapi_app:app", port, "--workers", "2"), port, telemetry_env(rx.grpc_endpoint)
    ) as srv:
        ids = _wait_for_instances(rx, 2)
        assert len(ids) == 2
        assert srv.pid not in ids.values(), "uvicorn's supervisor does not import the app"
        _send(srv.url, 10)
        rx.wait_for_spans(10, name="POST /predict", timeout=15)
        srv.terminate()
    assert len(rx.spans("POST /predict")) == 10


def test_flask_under_gunicorn_telemetry(rx: OtlpReceiver):
    """Flask: the Flask class imported before init() is still instrumented; 404s are named by method only."""
    port = free_port()
    with serve(gunicorn("examples.flask_app:app", port, "-w", "1"), port, telemetry_env(rx.grpc_endpoint)) as srv:
        with srv.client() as client:
            assert client.post("/predict", json=BODY).status_code == 200
            assert client.get("/definitely/not/here/987").status_code == 404
            assert client.get("/healthz").status_code == 200
            assert client.get("/stream", params={"n": 3}).text == "token-0 token-1 token-2 "
        root = rx.wait_for_span("POST /predict", timeout=10)
        assert root.attributes["http.route"] == "/predict"
        stages = rx.wait_for_spans(
            3, timeout=10, predicate=lambda s: s.trace_id == root.trace_id and s.kind == "INTERNAL"
        )
        assert {s.parent_span_id for s in stages} == {root.span_id}
        missing = rx.wait_for_span("GET", timeout=10)
        assert missing.attributes["http.response.status_code"] == 404
        assert "http.route" not in missing.attributes
        stream = rx.wait_for_span("generate iris-centroid", timeout=10)
        assert stream.attributes["model.stage"] == "generate"
        rx.wait_for_metric("obskit.model.time_to_first_output", timeout=10)
        point = rx.wait_for_metric(
            "http.server.request.duration", timeout=10, attributes={"http.response.status_code": 404}
        )
        assert "http.route" not in point.attributes
        assert all("987" not in s.name for s in rx.spans())
        assert not [s for s in rx.spans() if "healthz" in str(s.attributes) or "healthz" in s.name]
