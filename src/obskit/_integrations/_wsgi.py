"""obskit's own WSGI server instrumentation: the server span and the stable HTTP metrics of a Flask request.

Why not contrib's Flask/WSGI middleware (``OBSKIT_HTTP_INSTRUMENTATION=contrib`` still selects it): with a no-op
tracer *and* meter it costs ~120 µs per request (benchmarks/README.md, "Where the time goes"): request attributes
collected twice, the header-capture settings re-read from the environment, ~40 stability-mode checks, the method
sanitised three times, the URL rebuilt and the excluded-URL regexes run three times, per request. This module
emits the same span (name, kind, parent, attributes, status, events) and the same metric streams as contrib's
stable-semconv output (tests/integrations/test_flask_parity.py holds it to that), doing each piece of work once:
the excluded-path regex is one alternation searched in ``PATH_INFO``, the method sanitised from a cache, context
extracted only when a propagation header is there, attributes set at ``start_span``, and each metric record is one
``Series.record`` on a series resolved (through the cardinality guard) once per distinct attribute tuple.
With traces off, :meth:`Middleware.metrics_only` does the metrics part alone in one frame (no span state).

Measured in-process at this commit (a Flask POST with a route variable driven by direct WSGI calls, no server;
CPU µs per request added to the bare app's 75, least of 5 rounds of 20,000, one fresh process per row):

=====================================================  =======  ======
configuration                                          contrib  obskit
=====================================================  =======  ======
no-op tracer and meter (the middleware alone)           +116     +15
metrics only (no-op tracer, obskit's guarded meters)    +120     +14
full (SDK server span, in-memory exporter, metrics)     +192     +60
=====================================================  =======  ======

A streamed body (a generator view, ``stream_with_context``: anything but werkzeug's buffered list) is sent by the
server after the app has returned; the request then ends when the body is sent, not when the view returns: the
framework notes the stream in the environ and :class:`Stream` wraps the WSGI iterable (only then: a buffered
response costs a type check in the dispatch wrapper and one ``in`` in the WSGI wrapper, ~17 bytecodes).
Deliberate differences from contrib, which ends the span and records the duration when the app returns:

- the server span, ``http.server.request.duration`` and ``http.server.active_requests`` of a streamed response
  last until its last chunk is read (or an exception is raised by it, or the server closes it), and the server
  span is current while the body runs, so spans and logs made then belong to the request (under contrib they
  start traces of their own);
- an exception raised by the body after the status line sets ``error.type`` to its class (status ERROR and an
  exception event on the span, and on the duration), as the ASGI side does; contrib records no error;
- a body that is the server's ``wsgi.file_wrapper`` (``send_file``) is not wrapped, so that the server can still
  use sendfile: it ends when the app returns, as before.

The pieces not specific to WSGI (:class:`ServerMetrics`, :class:`HeaderCapture`) are meant to be shared with
the ASGI side (``_http.MethodNames`` already is).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from time import perf_counter, time_ns
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation import propagators as _response_propagation
from opentelemetry.instrumentation.wsgi import default_response_propagation_setter, wsgi_getter
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation import _SPAN_KEY

from .. import _safety
from .. import _semconv as sc
from .._context import SPAN_ID, TRACE_FLAGS, TRACE_ID, attach_context, current_context, detach_context, with_span
from .._serverspan import ServerSpan, server_spans
from .._tracer import CleanAttributes
from ._http import MAX_CLIENT_VALUE, SENSITIVE_HEADERS, ApiSeries, ExcludedPaths, MethodNames, redact_query

METHOD: Final = sc.ATTR_HTTP_REQUEST_METHOD
ROUTE: Final = sc.ATTR_HTTP_ROUTE
STATUS: Final = sc.ATTR_HTTP_RESPONSE_STATUS_CODE
SCHEME: Final = sc.ATTR_URL_SCHEME
ERROR_TYPE: Final = sc.ATTR_ERROR_TYPE
DURATION: Final = sc.METRIC_HTTP_SERVER_REQUEST_DURATION
ACTIVE: Final = sc.HTTP_SERVER_ACTIVE_REQUESTS
METHOD_ORIGINAL: Final = "http.request.method_original"
PROTOCOL: Final = "network.protocol.version"
# Bound of the per-process caches keyed by request data (user agents, metric attribute tuples).
MAX_SERIES: Final = 1024
_SERVER: Final = SpanKind.SERVER
_INTERNAL: Final = SpanKind.INTERNAL
_ERROR: Final = StatusCode.ERROR
_ERROR_STATUS: Final = Status(_ERROR)


RequestInfo = tuple[str, "str | None", str, "str | None", str, Any]
"""method, method_original, span name, url.scheme, network.protocol.version, active-requests series."""


def internal_error(where: str) -> None:
    """Count the exception being handled as obskit's own failure (re-raised under our tests). Call in ``except``."""
    with _safety.swallow_errors(where):
        raise


def _fullmatch(patterns: Sequence[str]) -> Callable[[str], Any] | None:
    return re.compile("|".join(patterns), re.IGNORECASE).fullmatch if patterns else None


class HeaderCapture:
    """Opted-in request and response headers as span attributes, sensitive values redacted (contrib's format).

    ``headers`` is OBSKIT_CAPTURE_HEADERS; contrib's own OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST
    and _RESPONSE variables are honoured as contrib does (read once here, not at every request).
    """

    def __init__(self, headers: Sequence[str]) -> None:
        from opentelemetry.util.http import (
            OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS,
            OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST,
            OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE,
            SanitizeValue,
            get_custom_headers,
        )

        env_request = get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST)
        env_response = get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE)
        self.enabled = bool(headers or env_request or env_response)
        self._request = _fullmatch(headers)
        # contrib's variable applies to HTTP_* keys only (not to CONTENT_TYPE/CONTENT_LENGTH), as contrib.
        self._env_request = _fullmatch(env_request)
        self._response = _fullmatch([*headers, *env_response])
        fields = [*SENSITIVE_HEADERS, *get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS)]
        self._sanitize = SanitizeValue(fields).sanitize_header_value

    def _attributes(
        self, prefix: str, found: Mapping[str, str], match: Callable[[str], Any] | None
    ) -> dict[str, tuple[str, ...]]:
        if match is None:
            return {}
        sanitize = self._sanitize
        return {
            prefix + name.replace("-", "_"): (sanitize(name, value)[:MAX_CLIENT_VALUE],)
            for name, value in found.items()
            if match(name)
        }

    def request(self, environ: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
        """``http.request.header.*`` from a WSGI environ."""
        found = {key[5:].replace("_", "-").lower(): str(value) for key, value in environ.items() if key[:5] == "HTTP_"}
        captured = self._attributes("http.request.header.", found, self._env_request)
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):  # WSGI keeps these two without the HTTP_ prefix
            if environ.get(key):
                found[key.replace("_", "-").lower()] = str(environ[key])
        captured.update(self._attributes("http.request.header.", found, self._request))
        return captured

    def response(self, headers: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
        """``http.response.header.*`` from WSGI response headers (repeated headers joined by commas)."""
        found: dict[str, str] = {}
        for key, value in headers or ():
            name = key.lower()
            found[name] = f"{found[name]},{value}" if name in found else value
        return self._attributes("http.response.header.", found, self._response)


class ServerMetrics:
    """``http.server.request.duration`` and ``http.server.active_requests`` exactly as contrib's stable output.

    With obskit's ``GuardedMeterProvider`` (instruments aggregated by obskit) the guarded series of each distinct
    attribute tuple is resolved once and cached; a tuple the guard overflowed is not cached, so every later
    record of it passes the guard again and is counted in ``obskit.cardinality.overflow`` as before. Any other
    meter provider gets API instruments, recorded per request.
    """

    def __init__(self, meter_provider: Any, scope: str, version: str, schema_url: str) -> None:
        from opentelemetry.instrumentation._semconv import HTTP_DURATION_HISTOGRAM_BUCKETS_NEW

        from .._guard import GuardedMeterProvider

        self._durations: dict[tuple[Any, ...], Any] = {}
        self._actives: dict[tuple[str, str | None], Any] = {}
        aggregated = meter_provider.aggregated if isinstance(meter_provider, GuardedMeterProvider) else None
        if aggregated is not None and DURATION in aggregated.keys and ACTIVE in aggregated.keys:
            registry = aggregated.registry
            self._guard: Any = meter_provider.guard
            self._keys: Mapping[str, frozenset[str] | None] = aggregated.keys
            # The same objects the guarded meter hands contrib for this scope (the registry keys them by name+scope).
            self._duration: Any = registry.histogram(
                DURATION,
                unit=sc.UNIT_SECONDS,
                description="Duration of HTTP server requests.",
                bounds=HTTP_DURATION_HISTOGRAM_BUCKETS_NEW,
                scope=(scope, version),
            )
            self._active: Any = registry.up_down_sum(
                ACTIVE, unit="{request}", description="Number of active HTTP server requests.", scope=(scope, version)
            )
        else:
            self._guard = None
            meter = meter_provider.get_meter(scope, version, schema_url)
            self._duration = meter.create_histogram(
                DURATION,
                unit=sc.UNIT_SECONDS,
                description="Duration of HTTP server requests.",
                explicit_bucket_boundaries_advisory=HTTP_DURATION_HISTOGRAM_BUCKETS_NEW,
            )
            self._active = meter.create_up_down_counter(
                ACTIVE, unit="{request}", description="Number of active HTTP server requests."
            )

    def _resolve(
        self,
        cache: dict[Any, Any],
        key: tuple[Any, ...],
        name: str,
        attributes: dict[str, Any],
        make: Callable[[Mapping[str, Any]], Any],
    ) -> Any:
        """The sink of a new attribute set (through the guard when aggregated), cached unless the guard overflowed."""
        guard = self._guard
        cacheable = True
        if guard is not None:
            attributes, cacheable = guard.instrument(name).reusable_filter(attributes, self._keys[name])
        found = make(attributes)
        if cacheable and len(cache) < MAX_SERIES:
            cache[key] = found
        return found

    def new_active(self, key: tuple[str, str | None]) -> Any:
        """The active-requests series of (method, scheme) not cached yet (``up()``/``down()``)."""
        method, scheme = key
        attributes: dict[str, Any] = {METHOD: method, SCHEME: scheme} if scheme else {METHOD: method}
        make = (lambda a: ApiSeries(self._active, a)) if self._guard is None else self._active.cell
        return self._resolve(self._actives, key, ACTIVE, attributes, make)

    def duration(
        self,
        method: str,
        scheme: str | None,
        status: int | None,
        route: str | None,
        protocol: str | None,
        error: str | None,
    ) -> Any:
        """The duration series of one attribute tuple: ``record(seconds, trace_id, span_id)``."""
        key = (method, scheme, status, route, protocol, error)
        found = self._durations.get(key)
        if found is not None:
            return found
        attributes: dict[str, Any] = {METHOD: method}
        if scheme:
            attributes[SCHEME] = scheme
        if status is not None:
            attributes[STATUS] = status
        if error is not None:
            attributes[ERROR_TYPE] = error
        if route is not None:
            attributes[ROUTE] = route
        if protocol:
            attributes[PROTOCOL] = protocol
        make = (lambda a: ApiSeries(self._duration, a)) if self._guard is None else self._duration.series
        return self._resolve(self._durations, key, DURATION, attributes, make)


class _Extractor:
    """The global propagator's ``extract``, skipped when the request carries none of the headers it reads.

    Skipping is only done for obskit's own propagators (W3C trace context and baggage), whose ``extract`` reads
    nothing but ``traceparent``/``tracestate``/``baggage`` and returns the context unchanged without them.
    """

    def __init__(self) -> None:
        self._propagator: object = None
        self._keys: tuple[str, ...] | None = None

    def _triggers(self, propagator: object) -> tuple[str, ...] | None:
        from opentelemetry.baggage.propagation import W3CBaggagePropagator
        from opentelemetry.propagators.composite import CompositePropagator
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        parts = getattr(propagator, "_propagators", None) if isinstance(propagator, CompositePropagator) else None
        keys: list[str] = []
        for part in parts if parts is not None else (propagator,):
            if type(part) is TraceContextTextMapPropagator:
                keys.append("HTTP_TRACEPARENT")  # tracestate alone is ignored
            elif type(part) is W3CBaggagePropagator:
                keys.append("HTTP_BAGGAGE")
            else:
                return None
        return tuple(keys)

    def __call__(self, environ: Mapping[str, Any]) -> otel_context.Context | None:
        """The parent context of a server span; None for "the current context" (nothing to extract)."""
        propagator = propagate.get_global_textmap()
        if propagator is not self._propagator:
            self._keys = self._triggers(propagator)
            self._propagator = propagator
        keys = self._keys
        if keys is not None:
            for key in keys:
                if key in environ:
                    break
            else:
                return None
        return propagator.extract(environ, getter=wsgi_getter)  # type: ignore[misc]  # contrib getter is untyped


def _set_int(attributes: dict[str, Any], key: str, value: Any) -> None:
    """An integer attribute from a WSGI string, skipped when empty or not a number (contrib's set_int_attribute)."""
    if value:
        try:  # noqa: SIM105 (twice per request: contextlib.suppress costs three calls)
            attributes[key] = int(value)
        except (TypeError, ValueError):
            pass


class Exchange:
    """One request's state, from the WSGI call to its end; ``start_response`` is what the app is given."""

    __slots__ = (
        "_start_response",
        "active",
        "error",
        "method",
        "method_original",
        "name",
        "protocol",
        "response_headers",
        "route",
        "scheme",
        "span",
        "start_ns",
        "status",
        "t0",
        "token",
    )

    method: str
    method_original: str | None
    name: str
    scheme: str | None
    protocol: str
    start_ns: int
    t0: float

    def __init__(self, start_response: Callable[..., Any]) -> None:
        self._start_response = start_response
        self.span: Span | None = None
        self.token: object = None
        self.route: str | None = None
        self.status: str | None = None
        self.error: BaseException | None = None
        self.response_headers: Any = None
        self.active: Any = None

    def start_response(self, status: str, headers: Any, exc_info: Any = None) -> Any:
        self.status = status
        self.response_headers = headers
        # get_global_response_propagator() returns this module global: read directly, a call less per request.
        propagator = _response_propagation._RESPONSE_PROPAGATOR
        if propagator is not None:  # e.g. traceresponse, when the user set one (contrib does the same)
            try:
                propagator.inject(headers, setter=default_response_propagation_setter)
            except Exception:
                internal_error("wsgi response propagation")
        return self._start_response(status, headers, exc_info)  # PEP 3333: exc_info may come by keyword


def _file_wrapper(iterable: Any, environ: Mapping[str, Any]) -> bool:
    """Whether ``iterable`` is the server's ``wsgi.file_wrapper`` (sent with sendfile, which a wrapper would undo)."""
    wrapper = environ.get("wsgi.file_wrapper")
    return isinstance(wrapper, type) and isinstance(iterable, wrapper)


def _streamed(
    iterable: Any, environ: Mapping[str, Any], context: otel_context.Context | None, end: Callable[..., Any], *args: Any
) -> Any:
    """A streamed body wrapped in a :class:`Stream` that calls ``end(*args, escaped)`` once it is sent.

    The server's ``wsgi.file_wrapper`` is not wrapped (so that it can still use sendfile): it ends now. So does a
    body that cannot be wrapped (counted as an internal error), never left open.
    """
    try:
        if _file_wrapper(iterable, environ):
            end(*args, None)
            return iterable
        return Stream(iterable, context, end, *args)
    except Exception:
        internal_error("wsgi stream")
        end(*args, None)
        return iterable


class Stream:
    """A streamed body's WSGI iterable: the request ends (metrics, span) once the body is sent, or given up on.

    That is at the end of the iteration, at an exception raised by the body, or else at ``close()``, which PEP 3333
    servers always call (gunicorn, werkzeug's ClosingIterator); ``end(*args, escaped)`` runs once, at the first of
    them. ``context``, when given, is made current around each step of the body and its ``close()``: the server
    iterates outside the app, so the spans and logs made while streaming would otherwise leave the request's trace.
    """

    __slots__ = ("_args", "_context", "_end", "_ended", "_iterable", "_iterator")

    def __init__(
        self, iterable: Iterable[Any], context: otel_context.Context | None, end: Callable[..., Any], *args: Any
    ) -> None:
        self._iterable = iterable
        self._iterator = iter(iterable)
        self._context = context
        self._end = end
        self._args = args
        self._ended = False

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Any:
        context = self._context
        token = None if context is None else attach_context(context)
        try:
            return next(self._iterator)
        except BaseException as exc:
            # The body is sent (StopIteration: the server has written every chunk) or failed.
            self._finish(None if exc.__class__ is StopIteration else exc)
            raise
        finally:
            if token is not None:
                detach_context(token)

    def close(self) -> None:
        context = self._context
        token = None if context is None else attach_context(context)
        escaped: BaseException | None = None
        try:
            close = getattr(self._iterable, "close", None)
            if close is not None:
                close()
        except BaseException as exc:
            escaped = exc
            raise
        finally:
            if token is not None:
                detach_context(token)
            self._finish(escaped)

    def _finish(self, escaped: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            self._end(*self._args, escaped)
        except Exception:
            internal_error("wsgi stream end")


class Middleware:
    """The framework-neutral part: ``begin`` at the WSGI call, ``enter`` once routed, ``finish`` when it returns.

    A streamed body is handed to ``stream`` instead, which calls ``finish`` once the server has read it.

    Args:
        tracer_provider: a no-op provider (metrics-only mode) means no span work at all.
        meter_provider: obskit's guarded provider (or any ``MeterProvider``).
        excluded_urls: obskit's path regexes (``OBSKIT_EXCLUDED_URLS``).
        scope: instrumentation scope name and version of the spans and metrics (contrib's, so streams match).
        capture_query: record ``url.query`` (sensitive values redacted).
        capture_headers: header-name regexes to record on the span.
    """

    def __init__(
        self,
        tracer_provider: Any,
        meter_provider: Any,
        excluded_urls: Sequence[str],
        scope: tuple[str, str, str],
        capture_query: bool,
        capture_headers: Sequence[str],
    ) -> None:
        name, version, schema_url = scope
        tracer: Tracer | None = None
        if tracer_provider is not None and not isinstance(tracer_provider, trace.NoOpTracerProvider):
            tracer = trace.get_tracer(name, version, tracer_provider, schema_url=schema_url)
            if isinstance(tracer, trace.NoOpTracer):
                tracer = None
        self.tracer = tracer
        # Server spans queued as their export data when obskit's own pipeline is the only one (_serverspan).
        self.server_spans = None if tracer is None else server_spans(tracer)
        self.excluded = ExcludedPaths(excluded_urls)
        self.methods = MethodNames()
        self.metrics = ServerMetrics(meter_provider, name, version, schema_url)
        self.capture_query = capture_query
        self.headers = HeaderCapture(capture_headers)
        self._extract = _Extractor()
        from opentelemetry.util.http import detect_synthetic_user_agent

        self._synthetic = detect_synthetic_user_agent
        self._agents: dict[str, str | None] = {}
        # Per (REQUEST_METHOD, wsgi.url_scheme, SERVER_PROTOCOL): what begin() derives from them (request_info);
        # per status line: its code and error.type (status). Bounded: both come from clients or the app.
        self._requests: dict[tuple[Any, Any, Any], RequestInfo] = {}
        self._statuses: dict[str, tuple[int | None, str | None]] = {}

    def begin(self, environ: Mapping[str, Any], start_response: Callable[..., Any]) -> Exchange | None:
        """A new exchange (the request counted as active), or None: excluded, or obskit failed."""
        try:
            excluded = self.excluded
            if excluded.active and excluded.cache[environ.get("PATH_INFO", "")]:
                return None
            exchange = Exchange(start_response)
            exchange.start_ns = time_ns()
            get = environ.get
            key = (get("REQUEST_METHOD", ""), get("wsgi.url_scheme"), get("SERVER_PROTOCOL", ""))
            (
                exchange.method,
                exchange.method_original,
                exchange.name,
                exchange.scheme,
                exchange.protocol,
                active,
            ) = self._requests.get(key) or self.request_info(key)
            exchange.active = active
            active.up()
            exchange.t0 = perf_counter()
            return exchange
        except Exception:
            internal_error("wsgi request start")
            return None

    def request_info(self, key: tuple[Any, Any, Any]) -> RequestInfo:
        """The :data:`RequestInfo` of a request's (REQUEST_METHOD, wsgi.url_scheme, SERVER_PROTOCOL).

        Cached in ``_requests`` when its active-requests series is cached.
        """
        raw, scheme, protocol = key
        method, original, name = self.methods(raw)
        if protocol[:5].upper() == "HTTP/":
            protocol = protocol[5:]
        metrics = self.metrics
        active_key = (method, scheme)
        active = metrics._actives.get(active_key) or metrics.new_active(active_key)
        info = (method, original, name, scheme, protocol, active)
        # A series the guard overflowed is not cached (ServerMetrics): neither is its request info, so that every
        # such request is counted as an overflow again.
        if active_key in metrics._actives and len(self._requests) < MAX_SERIES:
            self._requests[key] = info
        return info

    def status(self, status_line: str) -> tuple[int | None, str | None]:
        """``http.response.status_code`` and ``error.type`` of a WSGI status line (contrib's rules), cached."""
        code = status_line.split(" ", 1)[0]
        try:
            status_code = int(code)
        except ValueError:
            found: tuple[int | None, str | None] = (None, code)
        else:
            found = (status_code, code if status_code < 100 or status_code >= 500 else None)
        if len(self._statuses) < MAX_SERIES:
            self._statuses[status_line] = found
        return found

    def record_duration(
        self,
        method: str,
        scheme: str | None,
        protocol: str,
        route: str | None,
        status_line: str | None,
        escaped: BaseException | None,
        duration: float,
        trace_id: int = 0,
        span_id: int = 0,
    ) -> tuple[int | None, str | None]:
        """Record ``http.server.request.duration``; returns the status code and error.type it was recorded with."""
        if status_line is not None:
            status_code, error = self._statuses.get(status_line) or self.status(status_line)
            if escaped is not None and error is None:
                # Raised once the status line was given (a stream that failed midway): SPEC §3 counts an exception
                # as an error, as the ASGI side does (contrib records no error.type).
                error = type(escaped).__qualname__
        elif escaped is not None:
            # No response at all (PROPAGATE_EXCEPTIONS, or a BaseException): contrib records nothing; the
            # semantic conventions' error.type is then the exception's type.
            status_code, error = None, type(escaped).__qualname__
        else:
            status_code = error = None
        key = (method, scheme, status_code, route, protocol, error)
        metrics = self.metrics
        sink = metrics._durations.get(key)
        if sink is None:
            sink = metrics.duration(*key)
        sink.record(duration, trace_id, span_id)
        return status_code, error

    def metrics_only(self, wsgi_app: Callable[..., Any], route_key: str, stream_key: str) -> Callable[..., Any]:
        """``wsgi_app`` wrapped for metrics only (no tracer): what ``begin`` and ``finish`` do, in one frame.

        The framework puts the matched route in ``environ[route_key]`` while it dispatches, and sets
        ``environ[stream_key]`` when the body is streamed (recorded once the server has read it). No :class:`Exchange`
        (the status line is caught by a closure) and no response propagation (without a span there is nothing to
        inject). Why a path of its own: Flask metrics-only was the one target of issue 8 still missed (0.94x
        against 0.95x); per request this is ~130 bytecodes and two Python calls fewer than begin/finish and the
        Exchange (benchmarks/count_opcodes.py), and in a gunicorn worker obskit's cost follows its bytecode count
        (benchmarks/README.md, session 11).
        """
        excluded = self.excluded
        requests = self._requests
        request_info = self.request_info
        record_duration = self.record_duration
        end_metrics = self._end_metrics

        def obskit_metrics_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            try:
                if excluded.active and excluded.cache[environ.get("PATH_INFO", "")]:
                    return wsgi_app(environ, start_response)
                get = environ.get
                key = (get("REQUEST_METHOD", ""), get("wsgi.url_scheme"), get("SERVER_PROTOCOL", ""))
                method, _, _, scheme, protocol, active = requests.get(key) or request_info(key)
                seen: list[str] = []

                def start(status: str, headers: Any, exc_info: Any = None) -> Any:
                    seen.append(status)
                    return start_response(status, headers, exc_info)

                active.up()
                t0 = perf_counter()
            except Exception:
                internal_error("wsgi request start")
                return wsgi_app(environ, start_response)
            try:
                result = wsgi_app(environ, start)
            except BaseException as exc:
                end_metrics(method, scheme, protocol, get(route_key), seen, active, t0, exc)
                raise
            if stream_key in environ:  # a streamed body: recorded once the server has read it
                return _streamed(
                    result, environ, None, end_metrics, method, scheme, protocol, get(route_key), seen, active, t0
                )
            # _end_metrics(..., None), inline: a call fewer per request on this path
            duration = perf_counter() - t0
            try:
                active.down()
                record_duration(method, scheme, protocol, get(route_key), seen[-1] if seen else None, None, duration)
            except Exception:
                internal_error("wsgi request metrics")
            return result

        return obskit_metrics_app

    def _end_metrics(
        self,
        method: str,
        scheme: str | None,
        protocol: str,
        route: str | None,
        seen: list[str],
        active: Any,
        t0: float,
        escaped: BaseException | None,
    ) -> None:
        """The end of a metrics-only request that raised, or whose streamed body the server closed."""
        duration = perf_counter() - t0
        try:
            active.down()
            self.record_duration(method, scheme, protocol, route, seen[-1] if seen else None, escaped, duration)
        except Exception:
            internal_error("wsgi request metrics")

    def stream(self, exchange: Exchange, iterable: Any, environ: Mapping[str, Any]) -> Any:
        """The iterable of a streamed body (a :class:`Stream`), which ends ``exchange`` once the server has read it.

        The server span is detached from the server's context now (the app has returned) and attached again
        around each step of the body, so that the spans and logs made while streaming belong to the request.
        """
        context = None
        token = exchange.token
        if token is not None:
            try:
                context = current_context()
                exchange.token = None
                detach_context(token)
            except Exception:
                internal_error("wsgi stream")
        return _streamed(iterable, environ, context, self.finish, exchange)

    def enter(self, exchange: Exchange, environ: Mapping[str, Any], route: str | None) -> None:
        """The request is routed: start its server span (named by ``route``) and make it current."""
        exchange.route = route
        tracer = self.tracer
        if tracer is None:
            return
        try:
            current = current_context()
            if current.get(_SPAN_KEY, INVALID_SPAN) is INVALID_SPAN:  # trace.get_current_span(), inlined
                parent = self._extract(environ)
                kind = _SERVER
            else:  # inside another span (an app called from a traced one): contrib makes an internal span
                parent, kind = current, _INTERNAL
            name = exchange.name if route is None else f"{exchange.name} {route}"
            attributes = self._attributes(exchange, environ, route)
            fast = self.server_spans
            span = None if fast is None else fast.start(name, parent, kind, attributes, exchange.start_ns)
            if span is None:
                span = tracer.start_span(name, parent, kind, attributes, start_time=exchange.start_ns)
            exchange.span = span
            exchange.token = attach_context(with_span(span, parent))
        except Exception:
            internal_error("wsgi span start")

    def _attributes(self, exchange: Exchange, environ: Mapping[str, Any], route: str | None) -> dict[str, Any]:
        """Contrib's stable-semconv request attributes (``collect_request_attributes``) and ``http.route``."""
        get = environ.get
        # Built here from str and int values only: the tracer takes them without re-checking each one.
        attributes: dict[str, Any] = CleanAttributes({METHOD: exchange.method})
        if exchange.method_original is not None:
            attributes[METHOD_ORIGINAL] = exchange.method_original
        if exchange.scheme:
            attributes[SCHEME] = exchange.scheme
        host = get("HTTP_HOST")
        if host:
            attributes["server.address"] = host
        _set_int(attributes, "server.port", get("SERVER_PORT"))
        target = get("RAW_URI")
        if target is None:
            target = get("REQUEST_URI")
        if target:  # contrib records the path only when the server gives the raw target
            path = get("PATH_INFO")
            if path:
                attributes["url.path"] = path if len(path) <= MAX_CLIENT_VALUE else path[:MAX_CLIENT_VALUE]
            if self.capture_query:
                query = get("QUERY_STRING")
                if query:
                    attributes["url.query"] = redact_query(query)[:MAX_CLIENT_VALUE]
        address = get("REMOTE_ADDR")
        if address:
            attributes["client.address"] = address
        _set_int(attributes, "client.port", get("REMOTE_PORT"))
        remote_host = get("REMOTE_HOST")
        if remote_host and remote_host != address:
            attributes["client.address"] = remote_host
        agent = get("HTTP_USER_AGENT")
        if agent:
            if not isinstance(agent, str):
                from opentelemetry.util.http import normalize_user_agent

                agent = normalize_user_agent(agent)
            if agent:
                if len(agent) > MAX_CLIENT_VALUE:
                    agent = agent[:MAX_CLIENT_VALUE]
                attributes["user_agent.original"] = agent
                synthetic = self._agents.get(agent, False)
                if synthetic is False:
                    synthetic = self._synthetic(agent)
                    if len(self._agents) < MAX_SERIES:
                        self._agents[agent] = synthetic
                if synthetic:
                    attributes["user_agent.synthetic.type"] = synthetic
        if exchange.protocol:
            attributes[PROTOCOL] = exchange.protocol
        if route is not None:
            attributes[ROUTE] = route
        if self.headers.enabled:
            attributes = dict(attributes)  # header values are tuples: the tracer checks them
            attributes.update(self.headers.request(environ))
        return attributes

    def finish(self, exchange: Exchange, escaped: BaseException | None) -> None:
        """Record the duration, end the span, restore the context; ``escaped``: what the app raised, if anything."""
        duration = perf_counter() - exchange.t0
        status_code: int | None = None
        error: str | None = None
        try:
            exchange.active.down()
            span = exchange.span
            trace_id = span_id = 0
            if span is not None:
                span_context = span.get_span_context()
                if span_context[TRACE_FLAGS] & 1:  # sampled: exemplars as the SDK's default trace_based filter
                    trace_id, span_id = span_context[TRACE_ID], span_context[SPAN_ID]
            status_code, error = self.record_duration(
                exchange.method,
                exchange.scheme,
                exchange.protocol,
                exchange.route,
                exchange.status,
                escaped,
                duration,
                trace_id,
                span_id,
            )
        except Exception:
            internal_error("wsgi request metrics")
        span = exchange.span
        if span is None:
            return
        try:
            if exchange.token is not None:
                detach_context(exchange.token)
            self._end_span(span, exchange, status_code, error, escaped)
        except Exception:
            internal_error("wsgi span end")

    def _end_span(
        self,
        span: Span,
        exchange: Exchange,
        status_code: int | None,
        error: str | None,
        escaped: BaseException | None,
    ) -> None:
        # The exception Flask turned into a 500, or that escaped (recorded below, as contrib's use_span: if an
        # Exception).
        exc = exchange.error if exchange.error is not None else escaped
        attributes = CleanAttributes()  # an int and a str: taken without a check
        if status_code is not None:
            attributes[STATUS] = status_code
        if error is not None:
            attributes[ERROR_TYPE] = error
        if type(span) is ServerSpan and status_code is not None and exc is None and not self.headers.enabled:
            # obskit's own span, the common case: the response attributes and the status in one call.
            span.respond(None, attributes, _ERROR_STATUS if error is not None else None)
            span.end()
            return
        if span.is_recording():
            captured: dict[str, Any] = attributes
            if self.headers.enabled and exchange.response_headers is not None:
                # Header values are tuples: a plain dict, which the span checks.
                captured = {**attributes, **self.headers.response(exchange.response_headers)}
            if captured:
                span.set_attributes(captured)
            if isinstance(exc, Exception):
                span.record_exception(exc)
                span.set_status(Status(_ERROR, f"{type(exc).__name__}: {exc}"))
            elif status_code is None and error is not None and exchange.status is not None:
                span.set_status(Status(_ERROR, "Non-integer HTTP status: " + error))
            elif error is not None:
                span.set_status(_ERROR_STATUS)
        span.end()
