"""Failures inside the telemetry pipeline are swallowed, counted and logged once; never raised into a handler."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import SpanProcessor

import obskit
from obskit import _safety, testing
from obskit.testing import OtlpReceiver


@pytest.fixture(autouse=True)
def _swallow() -> Iterator[None]:
    """These tests inject failures on purpose: obskit must swallow them (conftest makes it re-raise)."""
    previous = _safety.set_reraise(False)
    yield
    _safety.set_reraise(previous)


def _app() -> FastAPI:
    app = FastAPI()

    @obskit.inference(model="m")
    def predict(x: int) -> int:
        logging.getLogger("app.model").warning("scored %d", x)
        return x * 2

    @app.get("/predict")
    def route() -> dict[str, int]:
        return {"y": predict(21)}

    return app


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "obskit" and "internal error" in r.getMessage()]


class ExplodingProcessor(SpanProcessor):
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise RuntimeError("bug in on_start")

    def on_end(self, span: Any) -> None:
        raise RuntimeError("bug in on_end")


def test_a_failing_span_processor_never_reaches_the_handler(caplog: pytest.LogCaptureFixture):
    """A processor that raises on every span: requests succeed, spans still recorded, failures counted, one log."""
    before = _safety.internal_error_count()
    with testing.capture_telemetry() as capture:
        from obskit._setup import current_handle

        current = current_handle()
        assert current is not None
        assert current.tracer_provider is not None
        current.tracer_provider.add_span_processor(ExplodingProcessor())
        client = TestClient(_app())
        for _ in range(3):
            response = client.get("/predict")
            assert response.status_code == 200
            assert response.json() == {"y": 42}
        assert len(capture.spans("GET /predict")) == 3
        assert len(capture.spans("inference m")) == 3
        # Two spans per request, each failing on start and on end.
        assert _safety.internal_error_count() - before == 12
    assert _warnings(caplog) == [
        "obskit internal error in span processor ExplodingProcessor: RuntimeError "
        "(further ones are counted, not logged)"
    ]


def test_a_failing_log_processor_never_reaches_the_caller(receiver: OtlpReceiver):
    """A log record processor that raises: logging.warning() returns normally, the failure is counted."""
    from opentelemetry.sdk._logs import LogRecordProcessor

    class Exploding(LogRecordProcessor):
        def on_emit(self, log_record: Any) -> None:
            raise RuntimeError("bug in on_emit")

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    handle = obskit.init(endpoint=receiver.grpc_endpoint, system_metrics=False)
    assert handle.logger_provider is not None
    handle.logger_provider.add_log_record_processor(Exploding())
    before = _safety.internal_error_count()
    logging.getLogger("app").warning("still logged")
    assert _safety.internal_error_count() == before + 1
    assert handle.force_flush(5)
    receiver.wait_for_log(body="still logged", timeout=5)
    assert handle.shutdown(5)


def test_a_bug_in_the_cardinality_guard_never_reaches_the_handler(monkeypatch: pytest.MonkeyPatch):
    """The guard's filter raising: the request and the decorated call succeed; the failure is counted."""
    from obskit import _guard

    def broken(self: Any, attributes: Any) -> Any:
        raise RuntimeError("bug in the guard")

    monkeypatch.setattr(_guard._Instrument, "filter", broken)
    before = _safety.internal_error_count()
    with testing.capture_telemetry() as capture:
        response = TestClient(_app()).get("/predict")
        assert response.status_code == 200
        assert len(capture.spans("inference m")) == 1
        assert _safety.internal_error_count() > before


def test_a_batch_that_cannot_be_encoded_is_dropped_and_counted(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    """The OTLP encoder raising (a bug): that batch is dropped as 'error', counted, logged once; requests succeed."""
    from obskit import _buffer

    def broken(spans: Any) -> bytes:
        raise ValueError("cannot encode")

    handle = obskit.init(endpoint=receiver.grpc_endpoint, system_metrics=False)
    monkeypatch.setattr(_buffer, "_span_payload", broken)
    before = _safety.internal_error_count()
    client = TestClient(_app())
    assert [client.get("/predict").status_code for _ in range(3)] == [200, 200, 200]
    handle.force_flush(5)
    stats = handle.telemetry_stats()["spans"]
    assert stats.produced == 6
    assert stats.dropped["error"] == 6
    assert stats.balanced
    assert _safety.internal_error_count() > before
    assert _warnings(caplog) == [
        "obskit internal error in encode spans: ValueError (further ones are counted, not logged)"
    ]
    assert receiver.spans() == []
    assert handle.shutdown(5)
