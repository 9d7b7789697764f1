"""The configuration table: every ``OTEL_*`` and ``OBSKIT_*`` variable obskit reads, and ``load_settings``.

Precedence is explicit ``init()`` argument > environment > default; an empty string means unset.
Each parser accepts the variable's text (and, for explicit arguments, the native Python value) and raises
``ValueError`` whose text says what is accepted; ``load_settings`` turns that into a ``ConfigError``.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from . import _semconv as sc
from .exceptions import ConfigError

MASK: Final = "***"

# ---------------------------------------------------------------------------------------------------------------
# Parsers. Each takes a str (from the environment) or a native value (from an argument).


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError("expected 'true' or 'false'")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value.strip()


def _choice(*accepted: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in accepted:
            raise ValueError("expected one of " + ", ".join(repr(a) for a in accepted))
        return text

    return parse


def _number(
    *,
    kind: type[int] | type[float],
    low: float | None = None,
    high: float | None = None,
    scale: float = 1.0,
    unit: str = "",
) -> Callable[[Any], Any]:
    """A number in [low, high]; ``scale`` converts the variable's unit (ms) to the setting's (s)."""
    what = "an integer" if kind is int else "a number"

    def shown(bound: float) -> str:
        return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"

    bounds = ""
    if low is not None and high is not None:
        bounds = f" between {shown(low)} and {shown(high)}"
    elif low is not None:
        bounds = f" >= {shown(low)}"
    accepted = f"expected {what}{bounds}{unit}"

    def parse(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(accepted)
        try:
            number = kind(value.strip()) if isinstance(value, str) else kind(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(accepted) from None
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError(accepted)
        if kind is int and isinstance(value, float) and value != number:  # 2.9 is not an integer, 2.0 is
            raise ValueError(accepted)
        if (low is not None and number < low) or (high is not None and number > high):
            raise ValueError(accepted)
        return number * scale if scale != 1.0 else number

    return parse


_SIZE_SUFFIXES: Final = {
    "": 1,
    "b": 1,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
}


def _bytes(value: Any) -> int:
    accepted = "expected a size in bytes >= 1 MiB, optionally with a KiB, MiB or GiB suffix (e.g. '64MiB')"
    if isinstance(value, bool):
        raise ValueError(accepted)
    if isinstance(value, int):
        number = value
    else:
        match = re.fullmatch(r"\s*(\d+)\s*([kmg]i?b|b)?\s*", str(value), re.IGNORECASE)
        if not match:
            raise ValueError(accepted)
        number = int(match.group(1)) * _SIZE_SUFFIXES[(match.group(2) or "").lower()]
    if number < 1024**2:
        raise ValueError(accepted)
    return number


_BAD_PERCENT: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _key_values(what: str, *, strict: bool = False) -> Callable[[Any], dict[str, str]]:
    """``key1=value1,key2=value2`` with percent-encoded values (W3C baggage octets), as OTel specifies."""

    def parse(value: Any) -> dict[str, str]:
        if isinstance(value, Mapping):
            if not all(isinstance(k, str) and k and isinstance(v, str) for k, v in value.items()):
                raise ValueError(f"expected a mapping of non-empty {what} names to string values")
            return dict(value)
        if not isinstance(value, str):
            raise ValueError(f"expected a mapping of {what} names to values, or key=value text")
        result: dict[str, str] = {}
        for position, item in enumerate(value.split(","), start=1):
            if not item.strip():
                continue
            key, sep, val = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"entry {position} is not key=value; expected comma-separated key=value pairs")
            if strict:
                # The specification: an invalid percent-encoding discards the whole value; obskit fails instead.
                if _BAD_PERCENT.search(item):
                    raise ValueError(f"entry {position} has a '%' that does not start a percent-encoded byte (%XX)")
                try:
                    result[unquote(key.strip(), errors="strict")] = unquote(val.strip(), errors="strict")
                except UnicodeDecodeError:
                    raise ValueError(f"entry {position} does not decode to UTF-8") from None
            else:
                result[unquote(key.strip())] = unquote(val.strip())
        return result

    return parse


# RFC 9110 token characters (a header name), and what a header value may hold on both transports: gRPC metadata
# takes printable ASCII only, and requests refuses control characters and leading whitespace.
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE: Final = re.compile(r"[\x20-\x7e]*")


def _headers(value: Any) -> dict[str, str]:
    """Export headers, names lowercased (gRPC metadata requires it; HTTP names are case-insensitive).

    Checked here so that a header the transport would refuse fails init() instead of every export. Messages give
    the entry's position, never its text: a malformed entry may hold the secret in its name.
    """
    headers: dict[str, str] = {}
    for position, (name, text) in enumerate(_key_values("header")(value).items(), start=1):
        if not _TOKEN.fullmatch(name):
            raise ValueError(
                f"the name of header {position} is not a valid HTTP header name (letters, digits and !#$%&'*+.^_`|~-)"
            )
        if not _HEADER_VALUE.fullmatch(text) or text != text.strip():
            raise ValueError(
                f"the value of header {position} has characters a header cannot carry (control characters, "
                "non-ASCII characters or surrounding whitespace); percent-encode only printable ASCII"
            )
        headers[name.lower()] = text
    return headers


def _list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items: Iterable[Any] = value.split(",")
    elif isinstance(value, Iterable):
        items = value
    else:
        raise ValueError("expected a comma-separated list")
    return tuple(str(item).strip() for item in items if str(item).strip())


def _regex_list(value: Any) -> tuple[str, ...]:
    patterns = _list(value)
    if isinstance(value, str):
        pieces = value.split(",")
        for before, after in itertools.pairwise(pieces):
            # '^/v[0-9]{1,3}$' splits into two patterns that each compile: refuse rather than exclude the wrong paths.
            if re.search(r"\{\d*$", before) and re.match(r"\s*\d*\}", after):
                raise ValueError(
                    "a comma inside a {m,n} quantifier splits the pattern in two (commas separate patterns); pass a "
                    "list to init(excluded_urls=[...]) or spell the repetition out"
                )
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"pattern {pattern!r} is not a valid regular expression ({exc})") from None
    return patterns


_HOST: Final = re.compile(r"[A-Za-z0-9._~-]+|[0-9A-Fa-f:.]+")  # a DNS name or IPv4; an IPv6 address unbracketed


def _endpoint(value: Any) -> str:
    text = _str(value)
    if any(char.isspace() or not char.isprintable() for char in text):
        raise ValueError("expected a URL without whitespace or control characters")
    parts = urlsplit(text)
    # "collector:4317" parses with scheme "collector"; it is only a scheme if followed by "//".
    if parts.scheme and parts.scheme not in ("http", "https") and "://" in text:
        raise ValueError("expected an http:// or https:// URL")
    if "://" not in text:
        parts = urlsplit(f"//{text}")  # gRPC's host:port
    if not parts.hostname or not _HOST.fullmatch(parts.hostname):
        raise ValueError("expected a URL with a host name or IP address, e.g. http://collector:4317")
    try:
        parts.port  # noqa: B018 (urlsplit checks the port when it is read)
    except ValueError:
        raise ValueError("expected a port number from 0 to 65535 after the host") from None
    return text


def _path(value: Any) -> str:
    text = _str(value)
    if not os.path.isfile(text):
        raise ValueError("expected the path of a readable PEM file")
    return text


def _log_level(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip().upper()
    level = logging.getLevelName(text)
    if not isinstance(level, int):
        raise ValueError("expected one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'")
    return level


_SAMPLERS: Final = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
_PROPAGATORS: Final = ("tracecontext", "baggage", "none")


def _propagators(value: Any) -> tuple[str, ...]:
    names = tuple(name.lower() for name in _list(value))
    for name in names:
        if name not in _PROPAGATORS:
            raise ValueError("expected a comma-separated list of " + ", ".join(repr(p) for p in _PROPAGATORS))
    return names


# ---------------------------------------------------------------------------------------------------------------
# The table.


@dataclass(frozen=True, slots=True)
class Setting:
    """One configuration variable: where it comes from, how it is parsed, its default and its documentation."""

    name: str  # field of Settings and keyword of init()
    env: str | None  # the environment variable, None for argument-only settings
    parse: Callable[[Any], Any]
    default: Any
    type_doc: str
    doc: str
    example: str = ""
    secret: bool = False
    argument: bool = True  # accepted as an init() keyword
    parse_arg: Callable[[Any], Any] | None = None  # for explicit values when their unit differs (seconds, not ms)


_PROTOCOLS: Final = ("grpc", "http/protobuf")


def _ms(high: float | None = None) -> Callable[[Any], Any]:
    """A duration variable in milliseconds, held in seconds."""
    return _number(kind=int, low=0, high=high, scale=0.001, unit=" (milliseconds)")


# An export timeout past an hour is a mistake (a unit slip); past ~1e12 ms the HTTP exporter fails every export.
_timeout_ms = _ms(high=3_600_000)


_seconds = _number(kind=float, low=0.0, unit=" (seconds)")
_timeout_seconds = _number(kind=float, low=0.0, high=3600.0, unit=" (seconds)")


def _signal_settings() -> list[Setting]:
    rows: list[Setting] = []
    for signal in ("traces", "metrics", "logs"):
        upper = signal.upper()
        rows += [
            Setting(f"{signal}_endpoint", f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT", _endpoint, None, "URL",
                    f"OTLP endpoint for {signal} only, used verbatim (no /v1/{signal} is appended).",
                    f"http://collector:4318/v1/{signal}", argument=False),
            Setting(f"{signal}_protocol", f"OTEL_EXPORTER_OTLP_{upper}_PROTOCOL", _choice(*_PROTOCOLS), None,
                    "enum", f"Transport for {signal}; defaults to OTEL_EXPORTER_OTLP_PROTOCOL.", "http/protobuf",
                    argument=False),
            Setting(f"{signal}_headers", f"OTEL_EXPORTER_OTLP_{upper}_HEADERS", _headers, None,
                    "key=value list", f"Extra headers for {signal} export; values are secret.",
                    "x-tenant=ml", secret=True, argument=False),
            Setting(f"{signal}_timeout", f"OTEL_EXPORTER_OTLP_{upper}_TIMEOUT", _timeout_ms, None,
                    "milliseconds", f"Export timeout for {signal}; defaults to OTEL_EXPORTER_OTLP_TIMEOUT.",
                    "5000", argument=False),
        ]  # fmt: skip
    return rows


SETTINGS_TABLE: Final[tuple[Setting, ...]] = (
    Setting("sdk_disabled", "OTEL_SDK_DISABLED", _bool, False, "bool",
            "Disable all telemetry: init() installs nothing and every obskit call is a no-op.", "true"),
    Setting("service_name", "OTEL_SERVICE_NAME", _str, "unknown_service", "string",
            "The service.name resource attribute (wins over service.name in OTEL_RESOURCE_ATTRIBUTES).",
            "fraud-scorer"),
    Setting("service_version", "OBSKIT_SERVICE_VERSION", _str, None, "string",
            "The service.version resource attribute.", "1.4.2"),
    Setting("environment", "OBSKIT_ENVIRONMENT", _str, None, "string",
            "The deployment.environment.name resource attribute.", "production"),
    Setting("resource_attributes", "OTEL_RESOURCE_ATTRIBUTES", _key_values("attribute", strict=True), {},
            "key=value list",
            "Extra resource attributes, percent-encoded values.", "k8s.namespace.name=ml,team=fraud"),
    Setting("traces_exporter", "OTEL_TRACES_EXPORTER", _choice("otlp", "console", "none"), "otlp", "enum",
            "Where spans go.", "none"),
    Setting("metrics_exporter", "OTEL_METRICS_EXPORTER", _choice("otlp", "console", "none", "prometheus"), "otlp",
            "enum", "Where metrics go; 'prometheus' serves a pull endpoint instead of pushing.", "prometheus"),
    Setting("logs_exporter", "OTEL_LOGS_EXPORTER", _choice("otlp", "console", "none"), "otlp", "enum",
            "Where log records go. obskit never adds a console handler of its own.", "none"),
    Setting("endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT", _endpoint, None, "URL",
            "Base OTLP endpoint. Default http://localhost:4317 (grpc) or http://localhost:4318 (http/protobuf); "
            "for http/protobuf, /v1/traces, /v1/metrics and /v1/logs are appended.", "http://collector:4317"),
    *_signal_settings(),
    Setting("protocol", "OTEL_EXPORTER_OTLP_PROTOCOL", _choice(*_PROTOCOLS), "grpc", "enum",
            "OTLP transport.", "http/protobuf"),
    Setting("headers", "OTEL_EXPORTER_OTLP_HEADERS", _headers, {}, "key=value list",
            "Headers sent with every export (API keys); values are secret and never printed.",
            "authorization=Bearer%20abc", secret=True),
    Setting("timeout", "OTEL_EXPORTER_OTLP_TIMEOUT", _timeout_ms, 10.0, "milliseconds",
            "Timeout of one export request (the argument is in seconds).", "10000", parse_arg=_timeout_seconds),
    Setting("compression", "OTEL_EXPORTER_OTLP_COMPRESSION", _choice("gzip", "none"), "none", "enum",
            "Compression of export requests.", "gzip"),
    Setting("certificate", "OTEL_EXPORTER_OTLP_CERTIFICATE", _path, None, "path",
            "CA certificate (PEM) to verify the collector's TLS certificate.", "/etc/otel/ca.pem"),
    Setting("client_key", "OTEL_EXPORTER_OTLP_CLIENT_KEY", _path, None, "path",
            "Client private key (PEM) for mTLS.", "/etc/otel/client.key"),
    Setting("client_certificate", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", _path, None, "path",
            "Client certificate (PEM) for mTLS.", "/etc/otel/client.pem"),
    Setting("insecure", "OTEL_EXPORTER_OTLP_INSECURE", _bool, None, "bool",
            "gRPC only: plaintext even without an http:// scheme (default: decided by the scheme).", "true"),
    Setting("sampler", "OTEL_TRACES_SAMPLER", _choice(*_SAMPLERS), "parentbased_always_on", "enum",
            "Trace sampler.", "parentbased_traceidratio"),
    Setting("sampler_arg", "OTEL_TRACES_SAMPLER_ARG", _number(kind=float, low=0.0, high=1.0), None, "float",
            "Sampling ratio for the *traceidratio samplers (default 1.0).", "0.1"),
    Setting("propagators", "OTEL_PROPAGATORS", _propagators, ("tracecontext", "baggage"), "list",
            "Context propagators.", "tracecontext,baggage"),
    Setting("metric_export_interval", "OTEL_METRIC_EXPORT_INTERVAL", _number(kind=int, low=100, scale=0.001,
            unit=" (milliseconds)"), 60.0, "milliseconds", "Interval between metric exports (argument in seconds).",
            "15000", parse_arg=_number(kind=float, low=0.1, unit=" (seconds)")),
    Setting("metric_export_timeout", "OTEL_METRIC_EXPORT_TIMEOUT", _timeout_ms, 30.0, "milliseconds",
            "Timeout of one metric collection and export.", "30000", parse_arg=_timeout_seconds),
    Setting("bsp_schedule_delay", "OTEL_BSP_SCHEDULE_DELAY", _ms(), 5.0, "milliseconds",
            "Delay between two span batch exports.", "1000", parse_arg=_seconds),
    Setting("bsp_max_queue_size", "OTEL_BSP_MAX_QUEUE_SIZE", _number(kind=int, low=1), 2048, "int",
            "Spans held in memory waiting for export; past it new spans are dropped and counted.", "8192"),
    Setting("bsp_max_export_batch_size", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", _number(kind=int, low=1), 512, "int",
            "Spans per export request.", "512"),
    Setting("blrp_schedule_delay", "OTEL_BLRP_SCHEDULE_DELAY", _ms(), 1.0, "milliseconds",
            "Delay between two log record batch exports.", "1000", parse_arg=_seconds),
    Setting("blrp_max_queue_size", "OTEL_BLRP_MAX_QUEUE_SIZE", _number(kind=int, low=1), 2048, "int",
            "Log records held in memory waiting for export.", "8192"),
    Setting("prometheus_host", "OTEL_EXPORTER_PROMETHEUS_HOST", _str, "localhost", "host",
            "Address the prometheus pull endpoint listens on.", "0.0.0.0"),
    Setting("prometheus_port", "OTEL_EXPORTER_PROMETHEUS_PORT", _number(kind=int, low=0, high=65535), 9464, "port",
            "Port of the prometheus pull endpoint.", "9464"),
    Setting("model_name", "OBSKIT_MODEL_NAME", _str, None, "string",
            "Default model.name of stage decorators (else the function's name).", "fraud-xgb"),
    Setting("model_version", "OBSKIT_MODEL_VERSION", _str, None, "string",
            "Default model.version of stage decorators (else 'unknown').", "3"),
    Setting("max_label_values", "OBSKIT_MAX_LABEL_VALUES", _number(kind=int, low=1, high=100_000), 100, "int",
            "Distinct values kept per (metric, attribute); later new values become _OTHER.", "200"),
    Setting("max_label_length", "OBSKIT_MAX_LABEL_LENGTH", _number(kind=int, low=8, high=4096),
            sc.MAX_LABEL_VALUE_LENGTH, "int", "Metric attribute values are cut to this many characters.", "64"),
    Setting("denied_labels", "OBSKIT_DENIED_LABELS", _list, (), "list",
            "Attribute keys never used on metrics, added to the built-in deny list.", "tenant.id,customer.id"),
    Setting("excluded_urls", "OBSKIT_EXCLUDED_URLS", _regex_list, (sc.DEFAULT_EXCLUDED_URLS,), "regex list",
            "Comma-separated regexes searched in the URL path; a match means no span and no metric. "
            "Anchor them (^/health$) to avoid excluding /api/health-report.", "^/healthz$,^/internal/"),
    Setting("export_buffer_bytes", "OBSKIT_EXPORT_BUFFER_BYTES", _bytes, 64 * 1024**2, "bytes",
            "Memory bound of the export buffer that holds telemetry while the collector is away.", "128MiB"),
    Setting("shutdown_timeout", "OBSKIT_SHUTDOWN_TIMEOUT", _number(kind=float, low=0.0, high=300.0), 5.0,
            "seconds", "Deadline of shutdown()'s final flush, at exit and on SIGTERM.", "10"),
    Setting("auto_instrument", "OBSKIT_AUTO_INSTRUMENT", _bool, True, "bool",
            "Instrument Flask and FastAPI apps created after init().", "false"),
    Setting("http_instrumentation", "OBSKIT_HTTP_INSTRUMENTATION", _choice("obskit", "contrib"), "obskit", "enum",
            "What makes server spans and HTTP metrics: obskit's lean middleware, or the OpenTelemetry contrib "
            "instrumentors (same names and attributes, several times the cost per request).", "contrib"),
    Setting("log_level", "OBSKIT_LOG_LEVEL", _log_level, logging.INFO, "level",
            "Lowest level of log records exported over OTLP.", "WARNING"),
    Setting("capture_headers", "OBSKIT_CAPTURE_HEADERS", _list, (), "list",
            "Request/response headers recorded on server spans (opt-in; credentials are redacted).",
            "content-type,x-model-route"),
    Setting("capture_query", "OBSKIT_CAPTURE_QUERY", _bool, False, "bool",
            "Record query strings on server spans (opt-in; token, key, password and similar parameters are "
            "redacted).", "true"),
    Setting("system_metrics", "OBSKIT_SYSTEM_METRICS", _bool, True, "bool",
            "Export the process.* CPU, memory, thread and file-descriptor metrics.", "false"),
)  # fmt: skip

_BY_NAME: Final = {s.name: s for s in SETTINGS_TABLE}


@dataclass(frozen=True, slots=True)
class Settings:
    """The effective configuration. ``repr`` masks secret values."""

    values: Mapping[str, Any]
    sources: Mapping[str, str] = field(default_factory=dict)  # name -> "argument" | "environment" | "default"

    def __getattr__(self, name: str) -> Any:
        try:
            return object.__getattribute__(self, "values")[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        shown = {name: display_value(name, value) for name, value in self.values.items()}
        return f"Settings({shown})"

    def endpoint_for(self, signal: str) -> str:
        """The OTLP endpoint of one signal, with OpenTelemetry's rules for base versus per-signal endpoints."""
        specific = self.values[f"{signal}_endpoint"]
        protocol = self.protocol_for(signal)
        if specific:
            return str(specific)
        base = self.values["endpoint"]
        if protocol == "grpc":
            return str(base or "http://localhost:4317")
        base = str(base or "http://localhost:4318")
        return base.rstrip("/") + f"/v1/{signal}"

    def protocol_for(self, signal: str) -> str:
        return str(self.values[f"{signal}_protocol"] or self.values["protocol"])

    def headers_for(self, signal: str) -> dict[str, str]:
        merged = dict(self.values["headers"])
        merged.update(self.values[f"{signal}_headers"] or {})
        return merged

    def timeout_for(self, signal: str) -> float:
        specific = self.values[f"{signal}_timeout"]
        return float(specific if specific is not None else self.values["timeout"])


def _userinfo_bounds(url: str) -> tuple[int, int] | None:
    """Where the userinfo (``user:password``) of a URL or of a scheme-less ``host:port`` is, if it has one.

    Plain string work, so that a malformed URL (a bad port, no scheme) is handled all the same.
    """
    scheme_end = url.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    end = len(url)
    for separator in "/?#":
        found = url.find(separator, start)
        if found != -1:
            end = min(end, found)
    at = url.rfind("@", start, end)
    return None if at == -1 else (start, at)


def mask_url(url: str) -> str:
    """Hide the userinfo (user and password) of a URL or of a scheme-less ``user:password@host:port``."""
    bounds = _userinfo_bounds(url)
    return url if bounds is None else f"{url[: bounds[0]]}{MASK}{url[bounds[1] :]}"


def secret_texts(settings: Settings) -> list[str]:
    """Every secret the settings hold (header values; URL users and passwords, raw and decoded), longest first.

    What to scrub from text that third-party code wrote, such as an exporter's error message.
    """
    found: set[str] = set()
    for signal in ("traces", "metrics", "logs"):
        found.update(settings.headers_for(signal).values())
        endpoint = settings.endpoint_for(signal)
        bounds = _userinfo_bounds(endpoint)
        if bounds is not None:
            userinfo = endpoint[bounds[0] : bounds[1]]
            found.add(userinfo)
            for part in userinfo.split(":", 1):
                found.update((part, unquote(part)))
    found.discard("")
    return sorted(found, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by the mask."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def display_value(name: str, value: Any) -> Any:
    """A value safe to print: secrets masked (keys kept), URL passwords hidden."""
    setting = _BY_NAME.get(name)
    if value is None or setting is None:
        return value
    if setting.secret:
        if isinstance(value, Mapping):
            return {k: MASK for k in value}
        return MASK
    if setting.parse is _endpoint and isinstance(value, str):
        return mask_url(value)
    return value


def _describe_bad(setting: Setting, source: str, raw: Any) -> str:
    if setting.secret:
        shown = MASK
    elif setting.parse is _endpoint and isinstance(raw, str):
        shown = repr(mask_url(raw))
    else:
        shown = repr(raw) if len(repr(raw)) <= 200 else repr(raw)[:200] + "..."
    where = setting.env if source == "environment" else f"init({setting.name}=...)"
    return f"{where}={shown}"


def load_settings(env: Mapping[str, str] | None = None, **explicit: Any) -> Settings:
    """Resolve every setting: explicit argument > environment > default. Pure apart from reading ``env``.

    Raises:
        ConfigError: an unknown argument or a malformed value, naming the variable, the value (masked when
            secret) and what is accepted.
    """
    environ = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    unknown = [name for name in explicit if name not in _BY_NAME or not _BY_NAME[name].argument]
    if unknown:
        accepted = ", ".join(sorted(s.name for s in SETTINGS_TABLE if s.argument))
        raise ConfigError(f"init() got unknown argument(s) {', '.join(sorted(unknown))}; accepted: {accepted}")
    for setting in SETTINGS_TABLE:
        raw: Any = explicit.get(setting.name)
        source = "argument"
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            raw = environ.get(setting.env, "") if setting.env else ""
            source = "environment"
            if raw.strip() == "":
                values[setting.name] = setting.default
                sources[setting.name] = "default"
                continue
        parse = setting.parse_arg if source == "argument" and setting.parse_arg is not None else setting.parse
        try:
            values[setting.name] = parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{_describe_bad(setting, source, raw)}: {exc}") from None
        sources[setting.name] = source
    _check_endpoints(values, sources)
    return Settings(values=values, sources=sources)


def _check_endpoints(values: dict[str, Any], sources: dict[str, str]) -> None:
    """HTTP/protobuf needs a full URL; gRPC also accepts ``host:port``."""
    for signal in ("traces", "metrics", "logs"):
        protocol = values[f"{signal}_protocol"] or values["protocol"]
        for name in (f"{signal}_endpoint", "endpoint"):
            url = values[name]
            if url and protocol == "http/protobuf" and "://" not in url:
                setting = _BY_NAME[name]
                raise ConfigError(
                    f"{_describe_bad(setting, sources[name], url)}: the http/protobuf protocol needs a URL with "
                    "a scheme, e.g. http://collector:4318"
                )
            if url and protocol == "grpc" and mask_url(url) != url:
                # The gRPC exporter would dial "user:password@host" and never connect.
                setting = _BY_NAME[name]
                raise ConfigError(
                    f"{_describe_bad(setting, sources[name], url)}: a gRPC endpoint cannot carry a user and "
                    "password; send credentials as a header, e.g. OTEL_EXPORTER_OTLP_HEADERS="
                    "authorization=Basic%20<base64 of user:password>"
                )


def replace(settings: Settings, **changes: Any) -> Settings:
    """A copy of ``settings`` with some values changed (used by tests and the CLI)."""
    values = dict(settings.values)
    values.update(changes)
    return dataclasses.replace(settings, values=values)
