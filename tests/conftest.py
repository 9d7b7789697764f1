from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from obskit import _safety, testing


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with no OTEL_*/OBSKIT_* variables, obskit uninitialised, and internal errors raising."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "OBSKIT_")):
            monkeypatch.delenv(name)
    previous = _safety.set_reraise(True)
    testing._reset()
    try:
        yield
    finally:
        testing._reset()
        _safety.set_reraise(previous)
        from opentelemetry import trace

        assert not trace.get_current_span().get_span_context().is_valid, "a span leaked out of the test"


@pytest.fixture
def swallowing() -> Iterator[None]:
    """Internal errors are counted and swallowed, as in production."""
    previous = _safety.set_reraise(False)
    try:
        yield
    finally:
        _safety.set_reraise(previous)


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[testing.OtlpReceiver]:
    with testing.OtlpReceiver(host="127.0.0.1") as rx:
        yield rx


@pytest.fixture
def receiver(otlp_receiver: testing.OtlpReceiver) -> testing.OtlpReceiver:
    """The session receiver, emptied for this test."""
    otlp_receiver.clear()
    return otlp_receiver
