"""Flask: obskit's own WSGI middleware (``_wsgi``, the default), or contrib's FlaskInstrumentor.

Both give the same span and metric streams (stable HTTP semantic conventions, obskit's excluded URLs, opted-in
headers redacted); obskit's costs a fraction of contrib's per request (measured in ``_wsgi``'s docstring).
"""

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
    middleware: str = "obskit",
) -> None:
    """Instrument ``app`` with ``middleware`` ("obskit": obskit's own, "contrib": contrib's FlaskInstrumentor)."""
    try:
        from opentelemetry.instrumentation.flask import FlaskInstrumentor
    except ImportError:
        raise IntegrationUnavailable(f"Flask instrumentation is not installed: {HINT}") from None
    if middleware == "obskit":
        _instrument_lean(app, tracer_provider, meter_provider, excluded_urls)
        app._obskit_wsgi_app = app.wsgi_app  # what uninstrument() may undo
        return
    force_stable_http_semconv()
    # contrib adds before/teardown-request hooks, which Flask refuses once the app has served a request (an app
    # moved to another init()'s providers, or passed to instrument_app() late): let it add them.
    started = getattr(app, "_got_first_request", False)
    app._got_first_request = False
    try:
        FlaskInstrumentor.instrument_app(  # type: ignore[no-untyped-call]
            app,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            excluded_urls=contrib_excluded_urls(excluded_urls),
            enable_commenter=False,
            request_hook=_request_hook(capture().headers),
            response_hook=_response_hook(capture().headers),
        )
    finally:
        app._got_first_request = started
    app._obskit_wsgi_app = app.wsgi_app


def uninstrument(app: Any, middleware: str) -> bool:
    """Undo :func:`instrument` (to instrument ``app`` again for another ``init()``); False if it cannot.

    It cannot once something wrapped ``app.wsgi_app`` after obskit did (``ProxyFix``, say): restoring the original
    would drop that wrapper.
    """
    if app.__dict__.get("wsgi_app") is not app.__dict__.get("_obskit_wsgi_app"):
        return False
    del app._obskit_wsgi_app
    if middleware == "obskit":
        app.wsgi_app = app.__dict__.pop("_original_wsgi_app", app.wsgi_app)
        dispatch = app.__dict__.pop("_obskit_original_full_dispatch_request", None)
        if dispatch is not None:
            app.full_dispatch_request = dispatch
        app._is_instrumented_by_opentelemetry = False
        return True
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor.uninstrument_app(app)  # type: ignore[no-untyped-call]
    return True


_EXCHANGE_KEY = "obskit.exchange"
_ROUTE_KEY = "obskit.route"
_STREAM_KEY = "obskit.stream"


def _instrument_lean(app: Any, tracer_provider: Any, meter_provider: Any, excluded_urls: tuple[str, ...]) -> None:
    """Wrap ``app.wsgi_app`` (timing, metrics, span end) and ``app.full_dispatch_request`` (routed: span start).

    ``full_dispatch_request`` runs once the request context is pushed and the URL matched, around the
    ``request_started`` signal, the before-request hooks and the view; an exception escaping it is the one
    Flask answers with a 500 (what contrib's teardown hook sees). A wrapper there is cheaper than a
    before-request plus a teardown hook (each goes through Flask's ``ensure_sync``), and the span stays current
    until ``wsgi_app`` returns, so Flask's own "Exception on ..." log record carries the trace id. The dispatch
    wrapper also sees the finalized Response: a streamed one is noted in the environ, and the request then ends
    when the server has read the body (``Middleware.stream``), not when ``wsgi_app`` returns.

    With no tracer (metrics only) ``wsgi_app`` is ``Middleware.metrics_only``'s, and the dispatch wrapper only
    leaves the route (and the streamed-body mark) in the environ for it.
    """
    import flask
    from opentelemetry.instrumentation._semconv import _get_schema_url, _StabilityMode
    from opentelemetry.instrumentation.flask.version import __version__ as contrib_version
    from werkzeug.wsgi import ClosingIterator

    from ._wsgi import Middleware, internal_error

    settings = capture()
    middleware = Middleware(
        tracer_provider,
        meter_provider,
        excluded_urls,
        # contrib's scope, so that the exported streams are the same whichever middleware made them.
        ("opentelemetry.instrumentation.flask", contrib_version, _get_schema_url(_StabilityMode.HTTP)),
        settings.query,
        settings.headers,
    )
    begin, enter, finish, stream = middleware.begin, middleware.enter, middleware.finish, middleware.stream
    wsgi_app = app.wsgi_app
    dispatch = app.full_dispatch_request
    current_request = flask.request._get_current_object  # type: ignore[attr-defined]
    # Flask's request-context variable read directly (what the ``flask.request`` proxy does, a call shallower);
    # the proxy when a Flask version has no such variable.
    request_context = getattr(getattr(flask, "globals", None), "_cv_request", None)
    get_request_context = request_context.get if request_context is not None else None
    tracer = middleware.tracer
    in_memory = ClosingIterator  # the body class of a response made by running a WSGI app: an HTTPException's

    def obskit_wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
        exchange = begin(environ, start_response)
        if exchange is None:
            return wsgi_app(environ, start_response)
        environ[_EXCHANGE_KEY] = exchange
        try:
            result = wsgi_app(environ, exchange.start_response)
        except BaseException as exc:
            finish(exchange, exc)
            raise
        if _STREAM_KEY in environ:  # a streamed body: the request ends once the server has read it, not here
            return stream(exchange, result, environ)
        finish(exchange, None)
        return result

    def obskit_full_dispatch_request() -> Any:
        request = get_request_context().request if get_request_context is not None else current_request()
        environ = request.environ
        exchange = environ.get(_EXCHANGE_KEY)
        if exchange is None:  # excluded, or not called through wsgi_app (e.g. under test_request_context())
            return dispatch()
        try:
            rule = request.url_rule
            enter(exchange, environ, None if rule is None else rule.rule)
        except Exception:
            internal_error("flask dispatch")
        try:
            response = dispatch()
        except Exception as exc:
            if not app.should_ignore_error(exc):
                exchange.error = exc
            raise
        try:
            # werkzeug keeps a buffered body as a list; anything else (a generator, stream_with_context, a file)
            # is sent after wsgi_app returns: note it for obskit_wsgi_app (Response.is_streamed costs a call). An
            # HTTPException (abort(404), a 405) comes as the ClosingIterator of its in-memory body: not a stream.
            if response.response.__class__ is not list and response.response.__class__ is not in_memory:
                environ[_STREAM_KEY] = True
        except Exception:
            internal_error("flask dispatch")
        return response

    def obskit_route_dispatch_request() -> Any:
        # Metrics only: the route, and whether the body is streamed, for middleware.metrics_only() to read in
        # the environ.
        try:
            request = get_request_context().request if get_request_context is not None else current_request()
            rule = request.url_rule
            if rule is not None:
                request.environ[_ROUTE_KEY] = rule.rule
        except Exception:
            internal_error("flask dispatch")
            return dispatch()
        response = dispatch()
        try:  # as in obskit_full_dispatch_request
            if response.response.__class__ is not list and response.response.__class__ is not in_memory:
                request.environ[_STREAM_KEY] = True
        except Exception:
            internal_error("flask dispatch")
        return response

    app._original_wsgi_app = wsgi_app
    app._obskit_original_full_dispatch_request = dispatch
    if tracer is None:
        app.wsgi_app = middleware.metrics_only(wsgi_app, _ROUTE_KEY, _STREAM_KEY)
        app.full_dispatch_request = obskit_route_dispatch_request
    else:
        app.wsgi_app = obskit_wsgi_app
        app.full_dispatch_request = obskit_full_dispatch_request
    app._is_instrumented_by_opentelemetry = True


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
