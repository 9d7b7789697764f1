"""obskit's shortcuts to OpenTelemetry's current context behave as the API's functions."""

from __future__ import annotations

import pytest
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from obskit import _context


def test_the_default_runtime_context_is_read_directly() -> None:
    assert _context._context_var is not None
    assert _context.current_context == _context._context_var.get


def test_current_and_attach_agree_with_the_api() -> None:
    span = NonRecordingSpan(SpanContext(1, 2, False, TraceFlags(TraceFlags.SAMPLED)))
    token = _context.attach_context(_context.with_span(span))
    try:
        assert trace.get_current_span() is span  # what the API sees
        assert _context.current_context() is context_api.get_current()
        assert _context.current_context().get(next(iter(_context.current_context()))) is span
    finally:
        context_api.detach(token)  # type: ignore[arg-type]
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_with_span_keeps_the_parent_contexts_other_values() -> None:
    parent = context_api.set_value("tenant", "acme")
    span = NonRecordingSpan(SpanContext(3, 4, False))
    made = _context.with_span(span, parent)
    assert trace.get_current_span(made) is span
    assert context_api.get_value("tenant", made) == "acme"
    assert made == trace.set_span_in_context(span, parent)


def test_span_context_indices_name_its_fields() -> None:
    context = SpanContext(5, 6, True, TraceFlags(TraceFlags.SAMPLED), trace.TraceState([("k", "v")]))
    assert context[_context.TRACE_ID] == context.trace_id
    assert context[_context.SPAN_ID] == context.span_id
    assert context[_context.TRACE_FLAGS] == context.trace_flags
    assert context[_context.TRACE_STATE] is context.trace_state
    assert context[_context.IS_VALID] is context.is_valid is True


def test_another_runtime_context_is_left_to_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

    class Other(ContextVarsRuntimeContext):  # e.g. what OTEL_PYTHON_CONTEXT selects: its own get/set may differ
        pass

    monkeypatch.setattr(context_api, "_RUNTIME_CONTEXT", Other())
    assert _context._runtime_context_var() is None


def test_detach_restores_and_a_foreign_token_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    import contextvars
    import logging

    span = NonRecordingSpan(SpanContext(7, 8, False))
    token = _context.attach_context(_context.with_span(span))
    _context.detach_context(token)
    assert trace.get_current_span() is trace.INVALID_SPAN

    foreign = contextvars.copy_context().run(_context.attach_context, _context.with_span(span))
    with caplog.at_level(logging.ERROR, logger="opentelemetry.context"):
        _context.detach_context(foreign)  # created in another context: the API's log, no exception
    assert any("Failed to detach context" in r.getMessage() for r in caplog.records)
    assert trace.get_current_span() is trace.INVALID_SPAN
