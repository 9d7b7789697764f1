"""Cheaper access to OpenTelemetry's current context and span contexts, for the per-request hot paths.

API only (no SDK import): the stage decorators and the server middlewares use it whatever the providers are.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Final

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.trace.propagation import _SPAN_KEY

# SpanContext is a tuple (trace_id, span_id, is_remote, trace_flags, trace_state, is_valid) whose fields are Python
# properties: the hot paths index it (a property call each is ~10% of an exemplar lookup).
TRACE_ID: Final = 0
SPAN_ID: Final = 1
IS_REMOTE: Final = 2
TRACE_FLAGS: Final = 3
TRACE_STATE: Final = 4
IS_VALID: Final = 5


def _runtime_context_var() -> ContextVar[Context] | None:
    """The variable behind OpenTelemetry's default runtime context; None if another runtime context is loaded."""
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

    runtime = getattr(context_api, "_RUNTIME_CONTEXT", None)
    if type(runtime) is ContextVarsRuntimeContext:
        var = getattr(runtime, "_current_context", None)
        if isinstance(var, ContextVar):
            return var
    return None


_context_var = _runtime_context_var()
# opentelemetry.context.get_current()/attach()/detach() are two Python calls each around this variable's get(),
# set() and reset() (a span path makes five of them per span): the variable's own methods when OpenTelemetry's
# default runtime context is in use (OTEL_PYTHON_CONTEXT unset), the API's functions otherwise.
current_context: Callable[[], Context] = _context_var.get if _context_var is not None else context_api.get_current
attach_context: Callable[[Context], object] = _context_var.set if _context_var is not None else context_api.attach


def detach_context(token: object) -> None:
    """``opentelemetry.context.detach(token)``: a token from another context is logged by the API, never raised."""
    try:
        _reset(token)
    except Exception:  # a token from another context (a generator resumed elsewhere): the API logs it
        context_api.detach(token)  # type: ignore[arg-type]


_reset: Callable[[Any], object] = _context_var.reset if _context_var is not None else context_api.detach


def with_span(span: trace_api.Span, parent: Context | None = None) -> Context:
    """``trace.set_span_in_context(span, parent)``, a call shallower."""
    return Context({**(parent if parent is not None else current_context()), _SPAN_KEY: span})
