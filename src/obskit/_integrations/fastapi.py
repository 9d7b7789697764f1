"""FastAPI: obskit's own ASGI middleware (``_asgi``), or contrib's FastAPIInstrumentor (OBSKIT_HTTP_INSTRUMENTATION).

Both emit the same stable-semconv server span and HTTP metrics (``tests/integrations/test_fastapi_parity.py``);
obskit's costs a fraction of contrib's per request (figures in ``_asgi``'s docstring).
"""

from __future__ import annotations

from typing import Any

from .._safety import record_internal_error
from ..exceptions import IntegrationUnavailable
from ._http import (
    contrib_excluded_urls,
    force_stable_http_semconv,
    header_capture_options,
    server_stopping,
    watch_termination,
)

HINT = "pip install 'obskit[fastapi]'"


def is_app(app: Any) -> bool:
    try:
        import fastapi
    except ImportError:
        return False
    return isinstance(app, fastapi.FastAPI)


def instrument(
    app: Any,
    tracer_provider: Any,
    meter_provider: Any,
    excluded_urls: tuple[str, ...],
    middleware: str = "obskit",
) -> None:
    """Instrument ``app`` with obskit's middleware (``middleware="obskit"``) or contrib's instrumentor."""
    if middleware == "obskit":
        _instrument_lean(app, tracer_provider, meter_provider, excluded_urls)
        _flush_at_signalled_shutdown(app)
        return
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    except ImportError:
        raise IntegrationUnavailable(f"FastAPI instrumentation is not installed: {HINT}") from None
    force_stable_http_semconv()
    _cache_route_lookup()
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        excluded_urls=contrib_excluded_urls(excluded_urls),
        # The per-message "http receive"/"http send" spans triple the span count and say nothing about a model.
        exclude_spans=["receive", "send"],
        # OBSKIT_CAPTURE_HEADERS, with Authorization, Cookie, API keys and tokens always redacted.
        **header_capture_options(),
    )
    app.middleware_stack = None  # as in _instrument_lean: an app that served a request builds its stack again
    _flush_at_signalled_shutdown(app)


def uninstrument(app: Any, middleware: str) -> bool:
    """Undo :func:`instrument` (to instrument ``app`` again for another ``init()``)."""
    if middleware == "obskit":
        original = app.__dict__.pop("_obskit_original_build_middleware_stack", None)
        if original is not None:
            app.build_middleware_stack = original
        app.middleware_stack = None  # rebuilt at the next request
        app._is_instrumented_by_opentelemetry = False
        return True
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.uninstrument_app(app)
    app.middleware_stack = None
    return True


def _contrib_scope() -> tuple[str, str | None]:
    """The contrib instrumentation scope: obskit's spans and metric streams are indistinguishable from contrib's."""
    try:
        from opentelemetry.instrumentation.fastapi.version import __version__
    except ImportError:
        return "opentelemetry.instrumentation.fastapi", None
    return "opentelemetry.instrumentation.fastapi", __version__


def _instrument_lean(app: Any, tracer_provider: Any, meter_provider: Any, excluded_urls: tuple[str, ...]) -> None:
    import logging
    import types

    from opentelemetry import trace
    from opentelemetry.instrumentation._semconv import _get_schema_url, _StabilityMode
    from opentelemetry.util.http import (
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST,
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE,
        get_custom_headers,
    )
    from starlette.middleware.errors import ServerErrorMiddleware

    from . import _asgi
    from ._http import capture

    name, version = _contrib_scope()
    schema_url = _get_schema_url(_StabilityMode.HTTP)
    # Metrics-only mode passes a no-op tracer provider: then no span work at all.
    tracer = (
        None
        if isinstance(tracer_provider, trace.NoOpTracerProvider)
        else tracer_provider.get_tracer(name, version, schema_url=schema_url)
    )
    instruments = _asgi.Instruments(meter_provider.get_meter(name, version, schema_url=schema_url))
    options = header_capture_options()
    # As contrib: without OBSKIT_CAPTURE_HEADERS, OpenTelemetry's own capture variables apply.
    request_headers = options["http_capture_headers_server_request"] or get_custom_headers(
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST
    )
    response_headers = options["http_capture_headers_server_response"] or get_custom_headers(
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE
    )
    headers = _asgi.HeaderCapture(request_headers, response_headers, options["http_capture_headers_sanitize_fields"])
    capture_query = capture().query
    route_of = _RouteOf(app)
    original = app.build_middleware_stack

    def build_middleware_stack(self: Any) -> Any:
        # As contrib: our middleware outermost (it sees the final status and every exception), and an exception
        # recorder just inside Starlette's ServerErrorMiddleware (the span gets the exception before the 500).
        inner = original()
        if not isinstance(inner, ServerErrorMiddleware):
            logging.getLogger("obskit").error(
                "obskit: FastAPI app not instrumented: unexpected middleware stack %s", type(inner).__name__
            )
            return inner
        # Metrics only: no span to record an exception on, so no recorder (a coroutine frame per request).
        errors = (
            inner
            if tracer is None
            else ServerErrorMiddleware(
                app=_asgi.exception_recorder(inner.app), handler=inner.handler, debug=inner.debug
            )
        )
        return _asgi.ServerMiddleware(
            errors,
            tracer=tracer,
            instruments=instruments,
            route_of=route_of,
            excluded_urls=excluded_urls,
            capture=headers,
            capture_query=capture_query,
        )

    app._obskit_original_build_middleware_stack = original
    app.build_middleware_stack = types.MethodType(build_middleware_stack, app)
    # An app that has served a request already built its stack, without us: Starlette builds it again, with us,
    # at the next request (its middlewares are constructed anew, as at the first request).
    app.middleware_stack = None
    app._is_instrumented_by_opentelemetry = True
    _disable_native_telemetry(app)


def _disable_native_telemetry(app: Any) -> None:
    """FastAPI >= 0.16x traces itself through the global providers unless contrib's middleware is in the stack.

    It cannot see obskit's middleware, so it is switched off in the app's own configuration (the dict its
    ``NativeTelemetry`` reads on every request): one server span per request, not two.
    """
    config = getattr(app, "_telemetry", None)
    if isinstance(config, dict):
        config.update(tracing=False, metrics=False, logs=False)


class _RouteOf:
    """The route template Starlette matched, as contrib reports it, without matching the routes again.

    After routing ``scope["route"]`` is the matched route (an ``APIRoute`` carries its router prefix in
    ``path``). A ``Mount`` leaves no trace but the ``root_path`` it extends, and the mounted app overwrites
    ``scope["route"]``: then the mount's own template is looked up among the app's mounts (memoised per
    matched prefix), as contrib reports a mount (``/sub``, not ``/sub/items/{id}``).
    """

    __slots__ = ("_app", "_mounts")

    def __init__(self, app: Any) -> None:
        self._app = app
        self._mounts: dict[str, str | None] = {}

    def __call__(self, scope: Any, root_path: str) -> str | None:
        if scope.get("root_path", "") == root_path:
            route = scope.get("route")
            if route is None:
                # No router ran when a middleware answered first (an auth middleware's 401, a CORS preflight):
                # then match the routes as contrib does for every request, for these responses only.
                return None if "router" in scope else _unrouted(scope)
            path = getattr(route, "path", None)
            return path if isinstance(path, str) else None
        prefix = scope.get("root_path", "")[len(root_path) :]
        found = self._mounts.get(prefix, False)
        if found is False:
            found = self._mount_of(prefix)
            if len(self._mounts) < _ROUTE_CACHE_SIZE:
                self._mounts[prefix] = found
        return found  # type: ignore[return-value]

    def _mount_of(self, prefix: str) -> str | None:
        from starlette.routing import Match, Mount

        probe = {"type": "http", "path": prefix + "/", "root_path": "", "method": "GET"}
        for route in _flatten(self._app.routes):
            # FastAPI's route contexts wrap the route (with its router prefix, if any) or hold the prefixed copy.
            mount = getattr(route, "starlette_route", None) or getattr(route, "original_route", None) or route
            if isinstance(mount, Mount) and mount.matches(probe)[0] is Match.FULL:
                return str(mount.path)
        return None


def _unrouted(scope: Any) -> str | None:
    """The route contrib would name for a request the router never saw (contrib's own matching)."""
    try:
        from opentelemetry.instrumentation.fastapi import _get_route_details

        return _get_route_details(scope)
    except Exception as exc:
        record_internal_error("fastapi route of an unrouted request", exc)
        return None


def _flatten(routes: Any) -> Any:
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI < 0.137.2: routes are matchable as they are
        return routes
    return iter_route_contexts(routes)


# contrib names each request by matching its path against every route of the app, in order, before routing:
# measured at +6.6 ms per request with 1,000 routes (benchmarks/README.md), linear in the number of routes. The
# result depends only on the app's routes and the request's method, path and host, so it is memoised in a
# bounded table; paths never seen before (or evicted) still take contrib's own lookup.
_ROUTE_CACHE_SIZE = 4096


def _cache_route_lookup() -> None:
    import threading

    import opentelemetry.instrumentation.fastapi as contrib

    original = contrib._get_default_span_details
    if getattr(original, "_obskit", False):
        return
    cache: dict[tuple[Any, ...], tuple[str, dict[str, str]]] = {}
    lock = threading.Lock()

    def span_details(scope: Any) -> tuple[str, dict[str, str]]:
        app = scope.get("app")
        key = (
            id(app),
            len(getattr(app, "routes", ())),
            scope.get("type"),
            scope.get("method"),
            scope.get("root_path", ""),
            scope.get("path"),
            next((v for k, v in scope.get("headers", ()) if k == b"host"), None),
        )
        hit = cache.get(key)
        if hit is not None:
            return hit[0], dict(hit[1])
        name, attributes = original(scope)
        with lock:
            if len(cache) >= _ROUTE_CACHE_SIZE:
                del cache[next(iter(cache))]
            cache[key] = (name, dict(attributes))
        return name, attributes

    span_details._obskit = True  # type: ignore[attr-defined]
    contrib._get_default_span_details = span_details


def _flush_at_signalled_shutdown(app: Any) -> None:
    """Wrap the app's lifespan (the default one or the user's): after its shutdown, flush if SIGTERM/SIGINT came."""
    import contextlib

    router = app.router
    original = router.lifespan_context
    if getattr(original, "_obskit", False):
        return

    @contextlib.asynccontextmanager
    async def lifespan(asgi_app: Any) -> Any:
        with _swallowed():
            watch_termination()  # in the lifespan, so after the server installed its own handlers
        async with original(asgi_app) as state:
            yield state
        with _swallowed():
            server_stopping()

    lifespan._obskit = True  # type: ignore[attr-defined]
    router.lifespan_context = lifespan


def _swallowed() -> Any:
    from .._safety import swallow_errors

    return swallow_errors("fastapi lifespan")


def patch_class(hook: Any) -> None:
    """Instrument every FastAPI app at the end of its ``__init__``, whoever holds a reference to the class."""
    import wrapt

    wrapt.wrap_function_wrapper("fastapi", "FastAPI.__init__", hook)
