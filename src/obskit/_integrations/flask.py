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
        request_hook=_name_unmatched,
    )


def _name_unmatched(span: Any, _environ: Any) -> None:
    # contrib names a request that matched no rule (a 404) after its raw path, which puts every scanner's URL
    # into span names; SPEC §3 names it by its method alone.
    import flask

    if flask.request.url_rule is None and span.is_recording():
        span.update_name(_method_name(flask.request.method))


def _method_name(method: str) -> str:
    from opentelemetry.util.http import sanitize_method

    sanitized = sanitize_method(method.strip())
    return "HTTP" if sanitized == "_OTHER" else str(sanitized)


def patch_class(hook: Any) -> None:
    """Instrument every Flask app at the end of its ``__init__``, whoever holds a reference to the class."""
    import wrapt

    wrapt.wrap_function_wrapper("flask", "Flask.__init__", hook)
