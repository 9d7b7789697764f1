"""obskit's own ASGI server middleware: contrib's stable-semconv server span and HTTP metrics, for far less CPU.

Why not ``opentelemetry-instrumentation-asgi``: with a no-op tracer and meter its middleware alone costs ~117 µs
per request (benchmarks/README.md, "Where the time goes": ``asgi_getter.get`` called 9 times, each re-decoding
every header; ``url.full`` built twice; server-span attributes set twice; an ``otel_send`` wrapper of 14-19 µs;
the route found by re-matching every route), more than obskit's whole budget of ~20 µs (metrics only) and
~79 µs (full telemetry). This middleware reads the headers once, takes the route Starlette already matched,
and records each metric into a series resolved once per distinct attribute set.

Measured in-process (an ``asyncio`` loop calling the FastAPI app directly: no server, no socket; one
``async def`` route, 10 routes; CPU µs per request added to the bare app's 76 µs, least of 5 rounds of 3,000
requests; Python 3.11, FastAPI 0.165, contrib 0.66b1; obskit at commit a51eb90 + the parity fixes):

======================================================  =======  ======
providers                                               contrib  obskit
======================================================  =======  ======
no-op tracer and meter                                     +80     +11
metrics only (no-op tracer, obskit's aggregation)         +110     +17
full (sampled server span to memory, metrics)             +158     +58
======================================================  =======  ======

With 1,000 routes (the requested one registered last) the bare app itself costs 1,202 µs per request
(Starlette's router matches linearly) and both middlewares' overheads disappear in the run-to-run noise
(contrib full +164, obskit full +38, metrics only +73 and -35): obskit never matches routes itself (the route
is read from what Starlette matched), so it has no per-route term.

What it emits is pinned to contrib's output by ``tests/integrations/test_fastapi_parity.py``: span name, kind,
parent, attributes (as left by obskit's ``RedactingSpanProcessor``), status, exception events, and the metric
streams (names, units, scope, attribute sets, buckets). Known, deliberate differences from contrib:

- websocket scopes pass through untraced (contrib makes a span per connection, and no metric);
- ``http.server.response.body.size`` is recorded only when this response has a ``Content-Length`` (contrib keeps
  the last value seen on the middleware instance and records it again for later responses without one);
- no ``BackgroundTask {name}`` spans (contrib patches ``BackgroundTask.__call__`` process-wide);
- a request to an instrumented app mounted in another is counted once, by the outer app under the mount's route
  (contrib counts it twice: under the mount's route and under the sub-app's); the sub-app's span is INTERNAL as
  contrib's;
- the route comes from Starlette's own match (a request answered by a middleware before routing, such as an auth
  401 or a CORS preflight, is matched as contrib matches every request); a sampler sees the provisional name
  ``{METHOD}`` (the route is known only after routing).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from time import perf_counter
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation import propagators as _response_propagation
from opentelemetry.instrumentation.asgi import asgi_setter
from opentelemetry.propagate import extract
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import INVALID_SPAN, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation import _SPAN_KEY

from .._context import SPAN_ID, TRACE_FLAGS, TRACE_ID, attach_context, current_context, detach_context, with_span
from .._safety import record_internal_error
from .._serverspan import ServerSpan, server_spans
from .._tracer import CleanAttributes
from ._http import MAX_CLIENT_VALUE, ApiSeries, ExcludedPaths, MethodNames, redact_query

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# (scope, root_path before the app ran) -> the route template, or None when no route matched.
RouteOf = Callable[[Scope, str], "str | None"]

_TEST_AGENTS: Final = ("alwayson",)
_BOT_AGENTS: Final = ("googlebot", "bingbot")
# Bounds of the per-middleware caches: attribute tuples -> resolved series, header names -> capture decision.
_MAX_CACHED: Final = 1024
_ERROR_STATUS: Final = Status(StatusCode.ERROR)


# Raw User-Agent header -> (user_agent.original, user_agent.synthetic.type or None); bounded, cleared when full.
_agents: dict[bytes, tuple[str, str | None]] = {}


def _agent(raw: bytes) -> tuple[str, str | None]:
    """The decoded agent and the synthetic type contrib would record ("test", "bot" or None), remembered."""
    agent = _decode(raw)[:MAX_CLIENT_VALUE]
    lowered = agent.lower()
    synthetic = "test" if any(p in lowered for p in _TEST_AGENTS) else None
    if synthetic is None and any(p in lowered for p in _BOT_AGENTS):
        synthetic = "bot"
    found = (agent, synthetic)
    if len(_agents) >= _MAX_CACHED:
        _agents.clear()
    _agents[raw] = found
    return found


def _decode(raw: bytes) -> str:
    # contrib's _decode_header_item, which raises for bytes that are neither UTF-8 nor a valid escape sequence
    # (b"\xff\\x"): then latin-1, which decodes any bytes, or the request would go without telemetry.
    try:
        return raw.decode("utf-8")
    except ValueError:
        try:
            return raw.decode("unicode_escape")
        except ValueError:
            return raw.decode("latin-1")


class _CarrierGetter(Getter[dict[str, str]]):
    def get(self, carrier: dict[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value] if value is not None else None

    def keys(self, carrier: dict[str, str]) -> list[str]:
        return list(carrier)


_GETTER: Final = _CarrierGetter()


def _name_of(span: Any) -> Any:
    """The span's current name: the very object it started with (the request's method name) until renamed."""
    return span.current_name() if type(span) is ServerSpan else getattr(span, "name", None)


_EMPTY: Final = Context()
# A scope key (ASGI extensions are namespaced keys): set by the outermost request obskit measures.
_SERVED: Final = "obskit.served"


class _Histogram:
    """One HTTP histogram; with obskit's aggregation behind it, each record is one ``Series.record``."""

    def __init__(self, instrument: Any) -> None:
        self.instrument = instrument
        # obskit's aggregated histogram: the guard runs once per distinct attribute tuple (_guard's resolve()).
        self._resolve: Callable[[dict[str, Any]], tuple[Any, bool]] | None = getattr(instrument, "resolve", None)
        self._series: dict[tuple[Any, ...], Any] = {}

    def record(
        self,
        value: float,
        key: tuple[Any, ...],
        attributes: Callable[[], dict[str, Any]],
        span: Any,
        trace_id: int,
        span_id: int,
    ) -> None:
        """One measurement (``Instruments.record`` looks cached series up itself and comes here only on a miss).

        ``attributes()`` builds the attribute set; ``trace_id``/``span_id`` are the exemplar's (0: none).
        """
        series = self._series.get(key)
        if series is None:
            if self._resolve is None:
                self.instrument.record(value, attributes(), trace.set_span_in_context(span))
                return
            series, reusable = self._resolve(attributes())
            if reusable and len(self._series) < _MAX_CACHED:
                self._series[key] = series
        series.record(value, trace_id, span_id)


class _UpDown:
    """``http.server.active_requests``: the guarded attributes resolved once per (method, scheme)."""

    def __init__(self, instrument: Any) -> None:
        self.instrument = instrument
        self._resolve: Callable[[dict[str, Any]], tuple[Any, bool]] | None = getattr(instrument, "resolve", None)
        self._cells: dict[tuple[Any, ...], Any] = {}

    def up(self, key: tuple[Any, ...], attributes: Callable[[], dict[str, Any]]) -> Any:
        """Add 1 to the series of ``key`` and return that series (to ``.down()`` at the request's end).

        ``attributes()`` builds the attribute set; it is called only for a key not seen (and cached) yet.
        """
        cell = self._cells.get(key)
        if cell is None:
            if self._resolve is None:
                cell = ApiSeries(self.instrument, attributes())
            else:
                cell, reusable = self._resolve(attributes())
                if reusable and len(self._cells) < _MAX_CACHED:
                    self._cells[key] = cell
        cell.up()
        return cell


class Instruments:
    """The server HTTP instruments, created from ``meter`` exactly as contrib's ASGI middleware creates them."""

    def __init__(self, meter: Any) -> None:
        from opentelemetry.instrumentation._semconv import HTTP_DURATION_HISTOGRAM_BUCKETS_NEW
        from opentelemetry.semconv._incubating.metrics.http_metrics import (
            create_http_server_active_requests,
            create_http_server_request_body_size,
            create_http_server_response_body_size,
        )
        from opentelemetry.semconv.metrics.http_metrics import HTTP_SERVER_REQUEST_DURATION

        self.duration = _Histogram(
            meter.create_histogram(
                name=HTTP_SERVER_REQUEST_DURATION,
                description="Duration of HTTP server requests.",
                unit="s",
                explicit_bucket_boundaries_advisory=HTTP_DURATION_HISTOGRAM_BUCKETS_NEW,
            )
        )
        self.response_size = _Histogram(create_http_server_response_body_size(meter))
        self.request_size = _Histogram(create_http_server_request_body_size(meter))
        self.active = _UpDown(create_http_server_active_requests(meter))
        # key -> the three histograms' cached series (None: none yet): one lookup per request, not three.
        self._all: dict[tuple[Any, ...], tuple[Any, Any, Any]] = {}

    def record(
        self,
        key: tuple[Any, ...],
        attributes: Callable[[], dict[str, Any]],
        span: Any,
        duration: float,
        response_length: int | None,
        request_length: int | None,
    ) -> None:
        """The duration and body-size records of one request (the three cached series found with one lookup)."""
        trace_id = span_id = 0
        if span is not INVALID_SPAN:
            span_context = span.get_span_context()
            if span_context[TRACE_FLAGS] & 1:  # sampled: exemplars as the SDK's default trace_based filter
                trace_id, span_id = span_context[TRACE_ID], span_context[SPAN_ID]
        found = self._all.get(key)
        if found is not None:
            durations, responses, requests = found
            # A body size without a cached series yet (a first body for this key) takes the path below.
            if (responses is not None or not response_length) and (requests is not None or request_length is None):
                durations.record(duration, trace_id, span_id)
                if response_length:  # as contrib: a Content-Length of 0 is not recorded
                    responses.record(response_length, trace_id, span_id)
                if request_length is not None:
                    requests.record(request_length, trace_id, span_id)
                return
        histograms = (self.duration, self.response_size, self.request_size)
        for histogram, value in zip(histograms, (duration, response_length or None, request_length), strict=True):
            if value is not None:
                histogram.record(value, key, attributes, span, trace_id, span_id)
        durations = self.duration._series.get(key)
        if durations is not None and (found is not None or len(self._all) < _MAX_CACHED):
            self._all[key] = (durations, self.response_size._series.get(key), self.request_size._series.get(key))


class HeaderCapture:
    """OBSKIT_CAPTURE_HEADERS as contrib applies it: names fully matched, sensitive values redacted."""

    def __init__(self, request: Iterable[str], response: Iterable[str], sanitize: Iterable[str]) -> None:
        request, response, sanitize = list(request), list(response), list(sanitize)
        self._request = re.compile("|".join(request), re.IGNORECASE) if request else None
        self._response = re.compile("|".join(response), re.IGNORECASE) if response else None
        self._sanitize = re.compile("|".join(sanitize), re.IGNORECASE) if sanitize else None
        self._decisions: dict[tuple[bytes, bool], tuple[str, bool] | None] = {}

    @property
    def request(self) -> bool:
        return self._request is not None

    @property
    def response(self) -> bool:
        return self._response is not None

    def decide(self, raw_name: bytes, response: bool) -> tuple[str, bool] | None:
        """``(attribute key, redact)`` for a header to capture, None otherwise; memoised per name."""
        decision = self._decisions.get((raw_name, response), False)
        if decision is not False:
            return decision  # type: ignore[return-value]
        name = _decode(raw_name)
        pattern = self._response if response else self._request
        found: tuple[str, bool] | None = None
        if pattern is not None and pattern.fullmatch(name):
            prefix = "http.response.header." if response else "http.request.header."
            redact = bool(self._sanitize is not None and self._sanitize.search(name))
            found = (prefix + name.lower().replace("-", "_"), redact)
        if len(self._decisions) < _MAX_CACHED:
            self._decisions[(raw_name, response)] = found
        return found

    def collect(self, headers: Iterable[tuple[bytes, bytes]], response: bool) -> dict[str, tuple[str, ...]]:
        values: dict[str, list[str]] = {}
        for raw_name, raw_value in headers:
            decision = self.decide(raw_name, response)
            if decision is not None:
                key, redact = decision
                values.setdefault(key, []).append("[REDACTED]" if redact else _decode(raw_value)[:MAX_CLIENT_VALUE])
        return {key: tuple(items) for key, items in values.items()}


class _ExceptionRecorder:
    """Inside Starlette's ServerErrorMiddleware, as contrib's: the exception is recorded before the 500 goes out."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            try:
                span = trace.get_current_span()
                if span.is_recording():
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            except Exception as own:  # never in place of the app's exception
                record_internal_error("asgi exception", own)
            raise


def exception_recorder(app: ASGIApp) -> ASGIApp:
    """Wrap the app inside the server-error middleware so that unhandled exceptions land on the server span."""
    return _ExceptionRecorder(app)


class ServerMiddleware:
    """The outermost ASGI middleware of an app: one server span (unless metrics only) and the HTTP metrics.

    Args:
        app: the app's own middleware stack.
        tracer: contrib's tracer scope, or None in metrics-only mode (then no span work at all).
        instruments: the HTTP instruments (from contrib's meter scope).
        route_of: what Starlette matched, read after the app ran.
        excluded_urls: path regexes of requests that get neither a span nor a metric.
        capture: request/response header capture, or None.
        capture_query: record ``url.query`` (sensitive values redacted).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        tracer: Any,
        instruments: Instruments,
        route_of: RouteOf,
        excluded_urls: Iterable[str] = (),
        capture: HeaderCapture | None = None,
        capture_query: bool = False,
    ) -> None:
        self.app = app
        self._tracer = tracer
        # Server spans queued as their export data when obskit's own pipeline is the only one (_serverspan).
        self._server_spans = None if tracer is None else server_spans(tracer)
        self._instruments = instruments
        self._route_of = route_of
        self._excluded = ExcludedPaths(excluded_urls)
        self._methods = MethodNames()  # reads OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS, as contrib
        self._capture = capture if capture is not None and (capture.request or capture.response) else None
        self._capture_query = capture_query
        # A request's span attributes (but for the URL query and captured headers), by (scheme, server, protocol,
        # raw method, raw User-Agent, no path, no client address, no client port); bounded, cleared when full. The
        # path and the client's address and port vary from request to request: each request sets its own in
        # their places. Per middleware: the method's attributes follow its own MethodNames.
        self._templates: dict[tuple[Any, ...], CleanAttributes] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            request = _Request(self, scope, send)
        except Exception as exc:
            record_internal_error("asgi request", exc)
            request = None
        if request is None or request.excluded:
            await self.app(scope, receive, send)
            return
        try:
            # Metrics only, nothing happens after a message is sent: a plain function returning the server's
            # awaitable (no coroutine frame of ours per message).
            await self.app(scope, receive, request.send if request.span is not INVALID_SPAN else request.send_plain)
        except Exception as exc:
            request.failed(exc)
            raise
        finally:
            try:
                request.finish()
            except Exception as exc:
                record_internal_error("asgi request end", exc)


class _Request:
    """One request's telemetry state (no closures: the send wrapper is a bound method)."""

    __slots__ = (
        "_send",
        "active",
        "content_length",
        "ended",
        "error_type",
        "excluded",
        "method",
        "method_original",
        "middleware",
        "name",
        "protocol",
        "response_length",
        "root_path",
        "route",
        "routed",
        "scheme",
        "scope",
        "server",
        "span",
        "start",
        "status",
        "token",
    )

    def __init__(self, middleware: ServerMiddleware, scope: Scope, send: Send) -> None:
        self.excluded = False
        path: str = scope.get("path", "")
        root_path: str = scope.get("root_path", "")
        excluded = middleware._excluded
        # Behind a proxy (uvicorn --root-path /api) the path includes the root path: /api/healthz is excluded too.
        if excluded.active and (
            excluded.cache[path]
            or (root_path and path.startswith(root_path) and excluded.cache[path[len(root_path) :]])
        ):
            self.excluded = True
            return
        self.start = perf_counter()
        self.middleware = middleware
        self.scope = scope
        self._send = send
        self.root_path = root_path
        raw_method: str = scope.get("method", "")
        methods = middleware._methods
        self.method, self.method_original, self.name = methods.cache.get(raw_method) or methods(raw_method)
        self.scheme = scope.get("scheme")
        self.protocol = scope.get("http_version")
        self.status: int | None = None
        self.error_type: str | None = None
        self.content_length: int | None = None
        self.response_length: int | None = None
        self.ended = False
        self.route: str | None = None
        self.routed = False
        self.span: Any = INVALID_SPAN
        self.server = False
        self.token: Any = None
        tracer = middleware._tracer

        # The one pass over the request headers.
        user_agent = content_length = None
        carrier: dict[str, str] | None = None
        for name, value in scope.get("headers") or ():
            if name == b"user-agent":
                if user_agent is None:
                    user_agent = value
            elif name == b"content-length":
                if content_length is None:
                    content_length = value
            elif tracer is not None and name in (b"traceparent", b"tracestate", b"baggage"):
                if carrier is None:
                    carrier = {}
                key = name.decode("latin-1")
                text = _decode(value)
                carrier[key] = f"{carrier[key]},{text}" if key in carrier else text
        if content_length is not None:
            try:  # noqa: SIM105 (per request: contextlib.suppress costs three calls)
                self.content_length = int(content_length)
            except ValueError:
                pass

        if tracer is not None:
            current = current_context()
            if current.get(_SPAN_KEY, INVALID_SPAN) is INVALID_SPAN:  # trace.get_current_span(), inlined
                kind = SpanKind.SERVER
                parent = extract(carrier, getter=_GETTER) if carrier else current
            else:  # an instrumented app mounted in another: contrib's nested span (and no header capture)
                kind = SpanKind.INTERNAL
                parent = current
            self.server = kind is SpanKind.SERVER
            attributes = self._span_attributes(scope, raw_method, path, user_agent)
            fast = middleware._server_spans
            span = None if fast is None else fast.start(self.name, parent, kind, attributes)
            if span is None:
                span = tracer.start_span(self.name, parent, kind, attributes)
            self.span = span
            self.token = attach_context(with_span(span, parent))
        if _SERVED in scope:
            # An app obskit instruments, mounted in another it instruments: the outer request counts it, once
            # (contrib counts it twice, under the mount's route and the sub-app's).
            self.active = None
        else:
            scope[_SERVED] = True
            self.active = middleware._instruments.active.up((self.method, self.scheme), self._active_attributes)

    def _active_attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {"http.request.method": self.method}
        if self.scheme:
            attributes["url.scheme"] = self.scheme
        return attributes

    def _metric_attributes(self) -> dict[str, Any]:
        """The attributes of the duration and body-size histograms (built only for a tuple not cached yet)."""
        attributes: dict[str, Any] = {"http.request.method": self.method}
        if self.scheme:
            attributes["url.scheme"] = self.scheme
        if self.protocol:
            attributes["network.protocol.version"] = self.protocol
        if self.route:
            attributes["http.route"] = self.route
        if self.status is not None:
            attributes["http.response.status_code"] = self.status
        if self.error_type is not None:
            attributes["error.type"] = self.error_type
        return attributes

    def _span_attributes(self, scope: Scope, raw_method: str, path: str, user_agent: bytes | None) -> dict[str, Any]:
        # contrib's collect_request_attributes, stable semantic conventions only. What repeats from request to
        # request comes from the middleware's _templates, with the path and the client's address and port, which
        # vary, set in their places: 0.6 µs per request in a loop, where building them all took 1.5.
        client = scope.get("client")
        address = port = None
        if client is not None:
            address, port = client[0], client[1]
        server = scope.get("server")
        if type(server) is list:  # Starlette's TestClient: ["testserver", 80]
            server = tuple(server)
        key = (
            self.scheme,
            server,
            self.protocol,
            raw_method,
            user_agent,
            not path,
            not address,
            port is None,
        )
        middleware = self.middleware
        templates = middleware._templates
        try:
            template = templates.get(key)
        except TypeError:  # an unhashable server: built each time
            template = self._template(scope, raw_method, path, user_agent)
        else:
            if template is None:
                template = self._template(scope, raw_method, path, user_agent)
                if len(templates) >= _MAX_CACHED:
                    templates.clear()
                templates[key] = template
        attributes: dict[str, Any] = CleanAttributes(template)
        if path:
            attributes["url.path"] = path if len(path) <= MAX_CLIENT_VALUE else path[:MAX_CLIENT_VALUE]
        if address:
            attributes["client.address"] = address
        if port is not None:
            attributes["client.port"] = int(port)
        if middleware._capture_query:
            query = scope.get("query_string")
            if query:
                text = redact_query(_decode(query) if isinstance(query, bytes) else query)
                attributes["url.query"] = text[:MAX_CLIENT_VALUE]
        capture = middleware._capture
        if capture is not None and capture.request and self.server:
            attributes = dict(attributes)  # header values are tuples: the tracer checks them
            attributes.update(capture.collect(scope.get("headers") or (), response=False))
        return attributes

    def _template(self, scope: Scope, raw_method: str, path: str, user_agent: bytes | None) -> CleanAttributes:
        """The span attributes of the request, in contrib's order, but for the URL query and captured headers."""
        server = scope.get("server") or ("0.0.0.0", 80)
        host, port = server[0], server[1]
        # Built here from str and int values only: the tracer takes them without re-checking each one.
        attributes = CleanAttributes()
        if self.scheme:
            attributes["url.scheme"] = self.scheme
        attributes["server.address"] = host if str(port) == "80" else f"{host}:{port}"
        if port:
            attributes["server.port"] = int(port)
        if self.protocol:
            attributes["network.protocol.version"] = self.protocol
        if path:
            attributes["url.path"] = path
        if raw_method:
            attributes["http.request.method"] = self.method
            if self.method_original is not None:
                attributes["http.request.method_original"] = self.method_original
        if user_agent:
            agent, synthetic = _agents.get(user_agent) or _agent(user_agent)
            attributes["user_agent.original"] = agent
            if synthetic is not None:
                attributes["user_agent.synthetic.type"] = synthetic
        client = scope.get("client")
        if client is not None:
            if client[0]:
                attributes["client.address"] = client[0]
            if client[1] is not None:
                attributes["client.port"] = int(client[1])
        return attributes

    def send_plain(self, message: Message) -> Awaitable[None]:
        """The send given to the app when there is no span (metrics only)."""
        if message["type"] == "http.response.start":
            try:
                self._response_start(message)
            except Exception as exc:
                record_internal_error("asgi response", exc)
        return self._send(message)

    def send(self, message: Message) -> Awaitable[None]:
        """The send given to the app when there is a span: it ends once the last body message is sent.

        A plain function, as ``send_plain``: only the last body message takes a coroutine of ours (``_send_last``).
        """
        if message["type"] == "http.response.body" and not message.get("more_body", False) and not self.ended:
            return self._send_last(message)
        return self.send_plain(message)

    async def _send_last(self, message: Message) -> None:
        await self._send(message)
        span = self.span
        if span is not INVALID_SPAN and not self.ended and not message.get("trailers"):
            try:
                self.ended = True
                span.end()
            except Exception as exc:
                record_internal_error("asgi span end", exc)

    def _response_start(self, message: Message) -> None:
        status = message.get("status")
        headers = message.get("headers") or ()
        for name, value in headers:
            if name == b"content-length":
                try:  # noqa: SIM105 (per response: contextlib.suppress costs three calls)
                    self.response_length = int(value)
                except ValueError:
                    pass
                break
        try:
            code = int(status)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            code = -1
        error = code < 100 or code >= 500
        self.status = code if code >= 0 else None
        self.error_type = str(status) if error else None
        route = self._route()
        span = self.span
        if span is INVALID_SPAN:
            return
        propagator = _response_propagation._RESPONSE_PROPAGATOR  # get_global_response_propagator(), a call less
        if propagator is not None:  # e.g. traceresponse, when the user set one (contrib does the same)
            try:
                propagator.inject(message, context=trace.set_span_in_context(span, _EMPTY), setter=asgi_setter)
            except Exception as exc:
                record_internal_error("asgi response propagation", exc)
        name = f"{self.name} {route}" if route else None
        # One call for the route and the response attributes (str and int values only).
        attributes = CleanAttributes()
        if route:
            attributes["http.route"] = route
        if code < 0:
            attributes["error.type"] = str(status)
            outcome: Status | None = Status(StatusCode.ERROR, f"Non-integer HTTP status: {status}")
        else:
            attributes["http.response.status_code"] = code
            if error:
                attributes["error.type"] = str(code)
            outcome = _ERROR_STATUS if error else None  # (contrib also sets UNSET otherwise, which a span ignores)
        capture = self.middleware._capture
        if capture is not None and not (capture.response and self.server):
            capture = None  # nothing to capture from this response
        if type(span) is ServerSpan and code >= 0 and capture is None:
            span.respond(name, attributes, outcome, self.name)  # obskit's own span: all of it in one call
            return
        # The route names the span, unless the app renamed it already (span.update_name(): contrib names the span
        # when it starts, so an app's own name stands there).
        if name is not None and _name_of(span) is self.name:
            span.update_name(name)
        if span.is_recording():
            if capture is not None:
                span.set_attributes(capture.collect(headers, response=True))
            span.set_attributes(attributes)
            if outcome is not None:
                span.set_status(outcome)

    def failed(self, exc: Exception) -> None:
        """An exception escaped the app: ``error.type``, unless a 5xx already said so.

        After another status (a stream that failed once its 200 was sent) ``error.type`` is the exception's class,
        on the span and the metric, as SPEC 3 counts an exception as an error (contrib records none then).
        """
        try:
            if self.error_type is None:
                self.error_type = error_type = type(exc).__qualname__
                span = self.span
                if span is not INVALID_SPAN and span.is_recording():
                    span.set_attribute("error.type", error_type)
        except Exception as own:  # never in place of the app's exception
            record_internal_error("asgi failure", own)

    def _name_span(self) -> str | None:
        """Once routing is done (the response starts, or the app returned): the route and the span's final name.

        Returns the route, the first time only (the caller sets ``http.route`` on the span).
        """
        route = self._route()
        span = self.span
        if route and span is not INVALID_SPAN and _name_of(span) is self.name:
            span.update_name(f"{self.name} {route}")
        return route

    def _route(self) -> str | None:
        """The route Starlette matched (noted as ``self.route``), the first time only; None after."""
        if self.routed:
            return None
        self.routed = True
        self.route = route = self.middleware._route_of(self.scope, self.root_path)
        return route

    def finish(self) -> None:
        duration = perf_counter() - self.start  # monotonic: never negative
        span = self.span
        try:
            if not self.routed:
                route = self._name_span()
                if route and span is not INVALID_SPAN:
                    span.set_attribute("http.route", route)
            active = self.active
            if active is not None:
                self.middleware._instruments.record(
                    (self.method, self.scheme, self.protocol, self.route, self.status, self.error_type),
                    self._metric_attributes,
                    span,
                    duration,
                    self.response_length,
                    self.content_length,
                )
                active.down()
        finally:
            if self.token is not None:
                detach_context(self.token)
            if span is not INVALID_SPAN and not self.ended:
                self.ended = True
                span.end()
