"""Flask: the contrib FlaskInstrumentor, with obskit's providers, excluded URLs and opted-in headers (redacted)."""

from __future__ import annotations

from typing import Any

from ..exceptions import IntegrationUnavailable
from ._http import SENSITIVE_HEADERS, capture, contrib_excluded_urls, force_stable_http_semconv

HINT = "pip install 'obskit[flask]'"


def is_app(app: Any) -> bool:
    try:
        import flask
    except ImportError:
        return False
    return isinstance(app, flask.Flask)


def instrument(
    app: Any,
    tracer_provider: Any,
    meter_provider: Any,
    excluded_urls: tuple[str, ...],
    middleware: str = "contrib",
) -> None:
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
        request_hook=_request_hook(capture().headers),
        response_hook=_response_hook(capture().headers),
    )


def _request_hook(headers: tuple[str, ...]) -> Any:
    sanitize, normalise = _header_tools(headers)

    def hook(span: Any, environ: Any) -> None:
        _name_unmatched(span)
        if headers and span.is_recording():
            # contrib's WSGI header capture reads OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_* from os.environ at
            # every request; obskit passes its setting here instead of changing the process environment.
            found = {
                key[5:].replace("_", "-").lower(): str(value) for key, value in environ.items() if key[:5] == "HTTP_"
            }
            for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):  # WSGI keeps these two without the HTTP_ prefix
                if environ.get(key):
                    found[key.replace("_", "-").lower()] = str(environ[key])
            span.set_attributes(sanitize.sanitize_header_values(found, list(headers), normalise[0]))

    return hook


def _response_hook(headers: tuple[str, ...]) -> Any:
    if not headers:
        return None
    sanitize, normalise = _header_tools(headers)

    def hook(span: Any, _status: str, response_headers: Any) -> None:
        if span is None or not span.is_recording():
            return
        found: dict[str, str] = {}
        for key, value in response_headers or ():
            name = key.lower()
            found[name] = f"{found[name]},{value}" if name in found else value
        span.set_attributes(sanitize.sanitize_header_values(found, list(headers), normalise[1]))

    return hook


def _header_tools(headers: tuple[str, ...]) -> tuple[Any, tuple[Any, Any]]:
    from opentelemetry.util.http import (
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS,
        SanitizeValue,
        get_custom_headers,
        normalise_request_header_name,
        normalise_response_header_name,
    )

    fields = [*SENSITIVE_HEADERS, *get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS)]
    return SanitizeValue(fields), (normalise_request_header_name, normalise_response_header_name)


def _name_unmatched(span: Any) -> None:
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
