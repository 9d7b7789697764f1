"""Pieces shared by the HTTP server integrations: excluded URLs and stable semantic conventions."""

from __future__ import annotations

from collections.abc import Sequence

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
