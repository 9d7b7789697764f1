"""Pieces shared by the HTTP server integrations: excluded URLs, stable semantic conventions, safe defaults."""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from opentelemetry.sdk.trace import SpanProcessor

# A URL's scheme and authority: contrib matches excluded-URL regexes against the *full* URL
# (scheme://host/path[?query]), while obskit documents them as matched against the path.
_URL_PREFIX = r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*"


def contrib_excluded_urls(patterns: Sequence[str]) -> str:
    """Translate path regexes into contrib's comma-separated full-URL regexes.

    ``^`` anchors at the start of the path, ``$`` at its end (a query string is ignored); an unanchored pattern
    is searched anywhere in the path. An empty list excludes nothing.
    """
    translated = []
    for pattern in patterns:
        body = pattern
        anchored = body.startswith("^")
        if anchored:
            body = body[1:]
        if body.endswith("$") and not body.endswith("\\$"):
            body = body[:-1] + "(?:[?#].*)?$"
        prefix = _URL_PREFIX if anchored else _URL_PREFIX + "[^?#]*?"
        translated.append(f"{prefix}(?:{body})")
    # contrib splits on commas; a literal comma can't be expressed, and one never occurs in a URL path regex
    # that we ship. An empty string would mean "use contrib's env default", so "exclude nothing" is spelled out.
    return ",".join(translated) if translated else r"^\b$"


# RFC 9110/5789 methods and QUERY: the ones opentelemetry.util.http.sanitize_method keeps (others are _OTHER).
KNOWN_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"}
)

_OTHER_METHOD: Final = "_OTHER"
_CAPTURE_ALL_METHODS: Final = "OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS"
_MAX_METHODS: Final = 64  # bound of the per-middleware cache of raw method strings


class MethodNames:
    """A request method as contrib reports it: ``(http.request.method, method_original or None, span name)``."""

    def __init__(self) -> None:
        # contrib reads this variable on every request; once per app is enough for a process setting.
        self._all = bool(os.environ.get(_CAPTURE_ALL_METHODS))
        self.cache: dict[str, tuple[str, str | None, str]] = {}

    def __call__(self, raw: str) -> tuple[str, str | None, str]:
        # Hot callers look self.cache up themselves first (a call less per request); this is the miss path too.
        found = self.cache.get(raw)
        if found is not None:
            return found
        upper = raw.upper()
        normalized = (upper if self._all or upper in KNOWN_METHODS else _OTHER_METHOD).strip()
        original = raw.strip()
        found = (
            normalized,
            original if original and original != normalized else None,
            "HTTP" if normalized == _OTHER_METHOD else normalized,
        )
        if len(self.cache) < _MAX_METHODS:
            self.cache[raw] = found
        return found


class ApiSeries:
    """One attribute set of an API instrument (a meter provider other than obskit's), used like obskit's series.

    ``record(value, trace_id, span_id)`` for a histogram (the SDK then takes exemplars itself), ``add(amount)``,
    ``up()`` and ``down()`` (``add(1)``, ``add(-1)``) for an up-down counter.
    """

    __slots__ = ("_attributes", "_instrument")

    def __init__(self, instrument: Any, attributes: Mapping[str, Any]) -> None:
        self._instrument = instrument
        self._attributes = attributes

    def record(self, value: float, trace_id: int = 0, span_id: int = 0) -> None:
        self._instrument.record(value, self._attributes)

    def add(self, amount: float) -> None:
        self._instrument.add(amount, self._attributes)

    def up(self) -> None:
        self._instrument.add(1, self._attributes)

    def down(self) -> None:
        self._instrument.add(-1, self._attributes)


class ExcludedPaths:
    """OBSKIT_EXCLUDED_URLS per request path: ``active and cache[path]`` (a dict lookup; a miss searches).

    Paths come from clients: the first ``_MAX_EXCLUDED_PATHS`` seen are remembered, later ones searched each time.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        search = excluded_paths(patterns)
        self.active = search is not None  # False: nothing is ever excluded
        self.cache = _Verdicts(search)


class _Verdicts(dict[str, bool]):
    """Whether a path is excluded; a path not seen yet is searched by ``__missing__`` (a dict hit is no call)."""

    __slots__ = ("_search",)

    def __init__(self, search: Callable[[str], Any] | None) -> None:
        super().__init__()
        self._search = search

    def __missing__(self, path: str) -> bool:
        excluded = self._search is not None and bool(self._search(path))
        if len(self) < _MAX_EXCLUDED_PATHS:
            self[path] = excluded
        return excluded


_MAX_EXCLUDED_PATHS: Final = 1024


def excluded_paths(patterns: Iterable[str]) -> Callable[[str], Any] | None:
    """Obskit's excluded-URL path regexes as one search per request path (None: nothing is excluded).

    A truthy result means excluded. The patterns are joined into one alternation; a set that cannot be (e.g. one
    with inline global flags, valid alone but not inside an alternation) is searched pattern by pattern.
    """
    patterns = list(patterns)
    if not patterns:
        return None
    try:
        return re.compile("|".join(f"(?:{p})" for p in patterns)).search
    except re.error:
        compiled = [re.compile(p) for p in patterns]
        return lambda path: any(c.search(path) for c in compiled)


def force_stable_http_semconv() -> None:
    """Stable HTTP semantic conventions whatever OTEL_SEMCONV_STABILITY_OPT_IN says (SPEC §3 names)."""
    from opentelemetry.instrumentation._semconv import (
        _OpenTelemetrySemanticConventionStability,
        _OpenTelemetryStabilitySignalType,
        _StabilityMode,
    )

    _OpenTelemetrySemanticConventionStability._initialize()  # type: ignore[no-untyped-call]
    _OpenTelemetrySemanticConventionStability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING[
        _OpenTelemetryStabilitySignalType.HTTP
    ] = _StabilityMode.HTTP


# ---------------------------------------------------------------------------------------------------------------
# Safe defaults: no query strings unless opted in, credentials redacted from URLs and captured headers.

# Header names (regexes searched case-insensitively, as contrib's sanitize fields) whose values are always redacted.
SENSITIVE_HEADERS: Final = (
    "authorization",  # and proxy-authorization
    "cookie",  # and set-cookie
    "api[-_]?key",  # x-api-key, api-key, apikey
    "token",
    "secret",
    "passw",
    "session",
    "signature",
    "credential",
    "x-auth",
)
_SENSITIVE_HEADER_RE: Final = re.compile("|".join(SENSITIVE_HEADERS), re.IGNORECASE)
# Query parameter names whose values are redacted when query strings are captured: whole names, then fragments.
SENSITIVE_QUERY_NAMES: Final = frozenset(
    {"key", "sig", "code", "jwt", "pwd", "auth", "awsaccesskeyid", "x-amz-credential", "x-amz-date"}
)
_SENSITIVE_QUERY_RE: Final = re.compile(
    r"token|secret|passw|signature|credential|api[-_]?key|apikey|session|private", re.IGNORECASE
)
REDACTED_HEADER: Final = "[REDACTED]"  # contrib's own marker for sanitized headers
REDACTED_VALUE: Final = "REDACTED"  # contrib's marker for query values and URL credentials
# Span attributes holding a URL (or its query), stable and older HTTP semantic conventions.
_URL_KEYS: Final = frozenset({"url.full", "url.original", "http.url", "http.target"})
_QUERY_KEY: Final = "url.query"
_HEADER_PREFIXES: Final = ("http.request.header.", "http.response.header.")


@dataclass(frozen=True)
class Capture:
    """What the server integrations record beyond the defaults (OBSKIT_CAPTURE_HEADERS; query strings)."""

    headers: tuple[str, ...] = ()
    query: bool = False


_capture = Capture()


def configure_capture(headers: tuple[str, ...] = (), query: bool = False) -> None:
    """Set what apps instrumented from now on capture (``init()`` calls it; no arguments resets)."""
    global _capture
    _capture = Capture(tuple(headers), query)


def capture() -> Capture:
    return _capture


def is_sensitive_header(name: str) -> bool:
    """Whether a header's value is always redacted (``Authorization``, ``Cookie``, ``X-Api-Key``, ``*token*``...)."""
    return bool(_SENSITIVE_HEADER_RE.search(name.replace("_", "-")))


def _is_sensitive_param(name: str) -> bool:
    lowered = name.strip().lower()
    return lowered in SENSITIVE_QUERY_NAMES or bool(_SENSITIVE_QUERY_RE.search(lowered))


# Client-sent values kept on server spans (url.path, url.query, user_agent.original) are cut to this many
# characters. The SDK's span queue is bounded by count (OTEL_BSP_MAX_QUEUE_SIZE), not bytes: with the collector
# down, 100-KB paths and 16-KB User-Agents from clients held 366 MiB in a uvicorn worker (52 MiB without obskit).
MAX_CLIENT_VALUE: Final = 8192


def redact_query(query: str) -> str:
    """Replace the values of sensitive parameters (``token``, ``api_key``, ``password``, ``sig``...) by REDACTED.

    Other parameters, their order and their encoding are kept as they were.
    """
    if not query:
        return query
    pieces = []
    for piece in query.split("&"):
        name, sep, _value = piece.partition("=")
        pieces.append(f"{name}={REDACTED_VALUE}" if sep and _is_sensitive_param(unquote_plus(name)) else piece)
    return "&".join(pieces)


def scrub_url(url: str, *, keep_query: bool) -> str:
    """A URL (or request target) without credentials, and without its query unless ``keep_query`` (then redacted)."""
    if "@" not in url and "?" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # unparsable: keep nothing that could be a secret
        return url.split("?", 1)[0].rsplit("@", 1)[-1]
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED_VALUE}:{REDACTED_VALUE}@" + netloc.rpartition("@")[2]
    query = redact_query(parts.query) if keep_query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub_attributes(attributes: Mapping[str, Any], *, keep_query: bool) -> dict[str, Any]:
    """The changes that make span attributes safe: ``{key: new value}``, ``None`` meaning "remove"."""
    changes: dict[str, Any] = {}
    for key, value in attributes.items():
        if key == _QUERY_KEY:
            if not keep_query:
                changes[key] = None
            elif isinstance(value, str) and (redacted := redact_query(value)) != value:
                changes[key] = redacted
        elif key in _URL_KEYS:
            if isinstance(value, str) and (scrubbed := scrub_url(value, keep_query=keep_query)) != value:
                changes[key] = scrubbed
        elif key.startswith(_HEADER_PREFIXES) and is_sensitive_header(key.split(".", 3)[3]):
            if isinstance(value, (list, tuple)):
                if any(item != REDACTED_HEADER for item in value):
                    changes[key] = tuple(REDACTED_HEADER for _ in value)
            elif value != REDACTED_HEADER:
                changes[key] = REDACTED_HEADER
    return changes


_KEYS_OF_INTEREST: Final = _URL_KEYS | {_QUERY_KEY}
# Key sets seen on spans -> whether one of them may need scrubbing. Spans of one kind carry the same keys every
# time, so this is a dict lookup per span instead of a scan of every key (twice per span: at start and end).
_needs_scrub: dict[tuple[str, ...], bool] = {}
_NEEDS_SCRUB_MAX: Final = 1024


def _may_need_scrub(keys: tuple[str, ...]) -> bool:
    known = not _KEYS_OF_INTEREST.isdisjoint(keys) or any(".header." in key for key in keys)
    if len(_needs_scrub) >= _NEEDS_SCRUB_MAX:
        _needs_scrub.clear()
    _needs_scrub[keys] = known
    return known


def may_need_scrub(keys: tuple[str, ...]) -> bool:
    """Whether a span with these attribute keys may hold a URL or a header value to redact."""
    known = _needs_scrub.get(keys)
    return _may_need_scrub(keys) if known is None else known


def _scrub(span: Any, keep_query: bool) -> None:
    attributes = getattr(span, "_attributes", None)
    if attributes is None:
        return
    # Fast path (every span, twice): a snapshot of the SDK's key storage, no lock taken.
    raw = getattr(attributes, "_dict", None)
    keys = tuple(raw) if type(raw) is dict else tuple(attributes)
    if not keys:
        return
    if not may_need_scrub(keys):
        return
    changes = scrub_attributes(raw.copy() if isinstance(raw, dict) else attributes, keep_query=keep_query)
    if not changes:
        return
    # At _on_ending the SDK has already frozen the attributes (the span is about to become a ReadableSpan); the
    # redaction must still land before any exporter copies them.
    frozen = getattr(attributes, "_immutable", False)
    attributes._immutable = False
    try:
        for key, value in changes.items():
            if value is None:
                del attributes[key]
            else:
                attributes[key] = value
    finally:
        attributes._immutable = frozen


class RedactingSpanProcessor(SpanProcessor):
    """Removes query strings (unless opted in) and credentials from URL attributes, redacts sensitive headers.

    Runs when a span starts (contrib sets the URL attributes then) and again as it ends (headers and URLs set
    later, e.g. response headers or by an application's own code), on every span, whatever instrumented it.
    """

    def __init__(self, *, capture_query: bool = False) -> None:
        self._keep_query = capture_query

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        _scrub(span, self._keep_query)

    def _on_ending(self, span: Any) -> None:
        # Every span ends here: the common answer ("these keys need nothing") without a call to _scrub.
        raw = getattr(getattr(span, "_attributes", None), "_dict", None)
        if type(raw) is dict and _needs_scrub.get(tuple(raw)) is False:
            return
        _scrub(span, self._keep_query)

    def on_end(self, span: Any) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def header_capture_options() -> dict[str, Any]:
    """The contrib (ASGI) header-capture arguments for the configured OBSKIT_CAPTURE_HEADERS, credentials redacted."""
    from opentelemetry.util.http import (
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS,
        get_custom_headers,
    )

    headers = list(_capture.headers)
    # A user's own OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS adds to the built-in list.
    sanitize = [*SENSITIVE_HEADERS, *get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS)]
    return {
        "http_capture_headers_server_request": headers or None,
        "http_capture_headers_server_response": headers or None,
        "http_capture_headers_sanitize_fields": sanitize,
    }


# ---------------------------------------------------------------------------------------------------------------
# Flushing when a signal ends the server. uvicorn (alone, with --workers, or as gunicorn's UvicornWorker) handles
# SIGTERM by shutting down gracefully and then re-raising the signal with the default action: the process dies
# without running exit handlers, so obskit's at-exit shutdown never runs. The app's lifespan shutdown comes after
# the last request has completed and before that re-raise: obskit flushes there, but only when a termination
# signal was seen (a test client leaving its `with` block must not wait on a flush).

_stop_hook: Callable[[], object] | None = None
_terminating = threading.Event()
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def set_stop_hook(hook: Callable[[], object] | None) -> None:
    """What to run at a lifespan shutdown caused by SIGTERM/SIGINT (``init()`` sets a bounded flush)."""
    global _stop_hook
    _stop_hook = hook


def watch_termination() -> None:
    """Note a SIGTERM/SIGINT, chained in front of the server's own handler (main thread only; no-op otherwise)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in _SIGNALS:
        previous = signal.getsignal(signum)
        if not callable(previous) or getattr(previous, "_obskit_chained", False):
            continue  # default/ignored: leave the process's behaviour alone

        def chained(number: int, frame: Any, previous: Callable[[int, Any], Any] = previous) -> Any:
            _terminating.set()
            return previous(number, frame)

        chained._obskit_chained = True  # type: ignore[attr-defined]
        signal.signal(signum, chained)


def server_stopping() -> None:
    """The app's lifespan is shutting down: flush if a termination signal is what stops it."""
    hook = _stop_hook
    if hook is not None and _terminating.is_set():
        hook()
