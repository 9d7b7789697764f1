"""Flask: the contrib FlaskInstrumentor, with obskit's providers and excluded URLs."""

from __future__ import annotations

from typing import Any

from ..exceptions import IntegrationUnavailable
from ._http import contrib_excluded_urls, force_stable_http_semconv

HINT = "pip install 'obskit[flask]'"


def is_app(app: Any) -> bool:
    try:
        import flask
    except ImportError:
        return False
    return isinstance(app, flask.Flask)


def instrument(app: Any, tracer_provider: Any, meter_provider: Any, excluded_urls: tuple[str, ...]) -> None:
    try:
        from opentelemetry.instrumentation.flask import FlaskInstrumentor
    except ImportError:
        raise IntegrationUnavailable(f"Flask instrumentation is not installed: {HINT}") from None
    force_stable_http_semconv()
    FlaskInstrumentor.instrument_app(  # type: ignore[no-untyped-call]
        app,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        excluded_urls=contrib_excluded_urls(excluded_urls),
        enable_commenter=False,
    )


def patch_class(hook: Any) -> None:
    """Instrument every Flask app at the end of its ``__init__``, whoever holds a reference to the class."""
    import wrapt

    wrapt.wrap_function_wrapper("flask", "Flask.__init__", hook)
