"""FastAPI: the contrib FastAPIInstrumentor, with obskit's providers and excluded URLs, no ASGI send/receive spans."""

from __future__ import annotations

from typing import Any

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
    middleware: str = "contrib",
) -> None:
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
    _flush_at_signalled_shutdown(app)


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
