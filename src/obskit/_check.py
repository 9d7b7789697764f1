"""``obskit check``: the effective configuration, then one test item per enabled OTLP signal.

The configuration comes from the same table and ``load_settings`` as ``init()``, so a bad variable fails here with
``init()``'s own ``ConfigError`` text. The probes use the exporters ``init()`` would build and send one span, one
metric point and one log record; an exporter reports failures only through its logger, so those records are
captured per probe thread and shown as the error.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from . import _config, _exporters, _resource
from ._config import SETTINGS_TABLE, Settings, display_value, load_settings, scrub, secret_texts
from .exceptions import ConfigError

# What the probes send: a span, a counter point and a log record with these names, so they can be found (or
# filtered out) in the backend.
CHECK_SPAN: Final = "obskit check"
CHECK_METRIC: Final = "obskit.check"
CHECK_LOG: Final = "obskit check: test log record"
CHECK_SCOPE: Final = "obskit.check"
SIGNALS: Final = ("traces", "metrics", "logs")
_EXPORTER_SETTING: Final = {"traces": "traces_exporter", "metrics": "metrics_exporter", "logs": "logs_exporter"}
# Time the probe threads get beyond the export timeout before they are reported as hung.
_SLACK_S: Final = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``obskit check``."""
    parser.description = (
        "Print the effective configuration (value and source: argument, environment or default; secrets masked), "
        "then send one test span, metric point and log record to each enabled OTLP endpoint and report whether "
        "it was accepted, with the round-trip time or the error. Exit 0 when every endpoint is reachable, 1 when "
        "one is not, 2 on a configuration error (the same message init() raises)."
    )
    parser.add_argument(
        "--set",
        dest="assignments",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="an init() keyword argument, as in code (e.g. --set service_name=fraud-scorer --set timeout=2); "
        "wins over the environment; repeatable",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="export timeout of each probe (default: OTEL_EXPORTER_OTLP_TIMEOUT and its per-signal variants)",
    )
    parser.add_argument("--no-send", action="store_true", help="only print the configuration")


def run(args: argparse.Namespace) -> int:
    """Run ``obskit check``; 0 when every enabled OTLP endpoint accepted its test item, else 1."""
    from rich.console import Console

    explicit: dict[str, Any] = _parse_assignments(args.assignments)
    if args.timeout is not None:
        if not (args.timeout > 0 and math.isfinite(args.timeout)):
            raise ConfigError(f"--timeout {args.timeout!r}: expected a positive number of seconds")
        explicit["timeout"] = args.timeout
    settings = load_settings(None, **explicit)
    if args.timeout is not None:  # --timeout bounds every probe, per-signal variables included
        settings = _config.replace(settings, traces_timeout=None, metrics_timeout=None, logs_timeout=None)
    console = _console(Console)
    console.print(configuration_table(settings))
    if settings.sdk_disabled:
        console.print("OTEL_SDK_DISABLED=true: obskit installs nothing, so there is nothing to send.")
        return 0
    if args.no_send:
        return 0
    results = probe_all(settings)
    console.print(results_table(results))
    failed = [r for r in results if r.reachable is False]
    if failed:
        console.print(f"[red]{len(failed)} of {len(results)} endpoint checks failed.[/red]")
        return 1
    checked = [r for r in results if r.reachable]
    console.print(f"[green]All {len(checked)} OTLP endpoint checks passed.[/green]" if checked else "Nothing to send.")
    return 0


def _console(console_type: Any) -> Any:
    # Piped output (CI logs, tests) gets plain text and room for the long endpoint URLs.
    return console_type(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160)


def _parse_assignments(assignments: list[str]) -> dict[str, str]:
    explicit: dict[str, str] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--set {item!r}: expected NAME=VALUE with NAME an init() keyword argument")
        explicit[name.strip()] = value
    return explicit


# --------------------------------------------------------------------------------------------------------------
# The configuration table.


def format_value(name: str, value: Any) -> str:
    """A setting's value as the user would write it: masked secrets, ms for millisecond variables."""
    setting = next(s for s in SETTINGS_TABLE if s.name == name)
    shown = display_value(name, value)
    if shown is None:
        return "(unset)"
    if isinstance(shown, bool):
        return "true" if shown else "false"
    if setting.type_doc == "milliseconds" and isinstance(shown, int | float):
        return f"{round(shown * 1000)} ms"
    if setting.type_doc == "level" and isinstance(shown, int):
        return logging.getLevelName(shown)
    if setting.type_doc == "bytes" and isinstance(shown, int) and shown % 1024**2 == 0:
        return f"{shown // 1024**2} MiB"
    if isinstance(shown, Mapping):
        return ",".join(f"{k}={v}" for k, v in shown.items()) or "(none)"
    if isinstance(shown, tuple | list):
        return ",".join(str(v) for v in shown) or "(none)"
    return str(shown)


def configuration_table(settings: Settings) -> Any:
    """A rich Table: setting, environment variable, effective value (secrets masked) and where it came from."""
    from rich.table import Table

    table = Table(title="obskit configuration", title_justify="left")
    table.add_column("setting", no_wrap=True)
    table.add_column("variable", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("source", no_wrap=True)
    for setting in SETTINGS_TABLE:
        source = settings.sources.get(setting.name, "default")
        style = "dim" if source == "default" else None
        table.add_row(
            setting.name,
            setting.env or "-",
            format_value(setting.name, settings.values[setting.name]),
            source,
            style=style,
        )
    return table


# --------------------------------------------------------------------------------------------------------------
# Probes.


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one signal's test export; ``reachable`` is None when the signal is not sent over OTLP."""

    signal: str
    exporter: str
    protocol: str
    endpoint: str
    reachable: bool | None
    seconds: float | None = None
    error: str = ""


class _ThreadRecords(logging.Handler):
    """Collects the exporters' log records per thread, so each probe reports its own error."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: dict[int, list[logging.LogRecord]] = {}
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._guard:
            self.records.setdefault(record.thread or 0, []).append(record)

    def error_for(self, thread_id: int) -> str:
        with self._guard:
            records = self.records.get(thread_id, [])
        errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
        warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
        if errors and warnings and "max retries" in errors[-1]:
            # The HTTP exporter's final message says only that it gave up; the cause is in the last retry's.
            return _one_line(f"{errors[-1]} Last attempt: {warnings[-1]}")
        if errors and "DEADLINE_EXCEEDED" in errors[-1]:
            # The gRPC exporter retried a failure (e.g. connection refused) until the check's deadline: the first
            # failure is the cause, the deadline only how it ended. (Whether it retries depends on its random backoff.)
            for warning in warnings:
                found = _GRPC_RETRY.match(warning)
                if found and found["code"] != "StatusCode.DEADLINE_EXCEEDED":
                    return _one_line(
                        f"Failed to export {found['what']} to {found['where']}, error code: {found['code']}, error "
                        f"details: {found['details']} (retried until the deadline: {errors[-1]})"
                    )
        return _one_line((errors or warnings or [""])[-1])


# The gRPC exporter's retry warning (opentelemetry-exporter-otlp-proto-grpc).
_GRPC_RETRY: Final = re.compile(
    r"Transient error (?P<code>\S+) encountered while exporting (?P<what>\S+) to (?P<where>\S+), "
    r"retrying in [0-9.]+s\. Error details: (?P<details>.*)",
    re.DOTALL,
)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _tcp_diagnosis(endpoint: str, timeout: float = 1.0) -> str:
    """Whether a TCP connection to the endpoint's host and port can be opened, as one sentence."""
    parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    host = parts.hostname or "localhost"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return ""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return f"(TCP connection to {host}:{port}: open, so the failure is above TCP: TLS, HTTP or OTLP)"
    except OSError as exc:
        return f"(TCP connection to {host}:{port}: {exc.strerror or exc})"


@contextmanager
def _captured_exporter_logs() -> Iterator[_ThreadRecords]:
    """Route the exporters' log records to a per-thread collector instead of the console.

    Every retry is logged as a WARNING, which would bury the table; and the exporters' ``DuplicateFilter`` drops a
    message already logged by another signal's exporter in the last 20 s, which would hide concurrent probes'
    errors. Both are undone on exit. Call it after the exporter modules are imported (their loggers exist then).
    """
    handler = _ThreadRecords()
    root = logging.getLogger("opentelemetry.exporter")
    loggers = [root] + [
        logger
        for name, logger in logging.Logger.manager.loggerDict.items()
        if name.startswith("opentelemetry.exporter.") and isinstance(logger, logging.Logger)
    ]
    saved = [(logger, list(logger.filters)) for logger in loggers]
    previous = root.propagate, root.level
    for logger in loggers:
        logger.filters.clear()
    root.addHandler(handler)
    root.propagate = False
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.propagate = previous[0]
        root.setLevel(previous[1])
        for logger, filters in saved:
            logger.filters[:] = filters


def _span_items(settings: Settings) -> list[Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=_resource.build_resource(settings), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer(CHECK_SCOPE).start_as_current_span(CHECK_SPAN, attributes={"obskit.check": True}):
        pass
    return list(memory.get_finished_spans())


def _metric_data(settings: Settings) -> Any:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(
        resource=_resource.build_resource(settings), metric_readers=[reader], shutdown_on_exit=False
    )
    counter = provider.get_meter(CHECK_SCOPE).create_counter(
        CHECK_METRIC, unit="{check}", description="Test points sent by `obskit check`."
    )
    counter.add(1)
    return reader.get_metrics_data()


def _log_items(settings: Settings) -> list[Any]:
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    memory = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = LoggerProvider(resource=_resource.build_resource(settings), shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    provider.get_logger(CHECK_SCOPE).emit(
        timestamp=time.time_ns(), severity_number=SeverityNumber.INFO, severity_text="INFO", body=CHECK_LOG
    )
    return list(memory.get_finished_logs())


def _sender(settings: Settings, signal: str) -> tuple[Callable[[], bool], Callable[[], None]]:
    """The real exporter of ``signal`` wrapped as ``send() -> accepted`` and ``close()``."""
    if signal == "traces":
        span_exporter = _exporters.span_exporter(settings)
        assert span_exporter is not None
        spans = _span_items(settings)
        return (lambda: span_exporter.export(spans).name == "SUCCESS"), span_exporter.shutdown
    if signal == "logs":
        log_exporter = _exporters.log_exporter(settings)
        assert log_exporter is not None
        records = _log_items(settings)
        return (lambda: log_exporter.export(records).name == "SUCCESS"), log_exporter.shutdown
    metric_exporter = _exporters.metric_exporter(settings)
    assert metric_exporter is not None
    data = _metric_data(settings)
    millis = settings.timeout_for("metrics") * 1000
    return (lambda: metric_exporter.export(data, timeout_millis=millis).name == "SUCCESS"), metric_exporter.shutdown


def _probe(base: ProbeResult, send: Callable[[], bool], captured: _ThreadRecords, out: dict[str, ProbeResult]) -> None:
    started = time.perf_counter()
    try:
        accepted = send()
    except Exception as exc:  # exporters return FAILURE rather than raise; anything else is reported too
        accepted, error = False, _one_line(f"{type(exc).__name__}: {exc}")
    else:
        error = "" if accepted else captured.error_for(threading.get_ident()) or "export failed"
        if not accepted and "Last attempt" not in error and "error details" not in error:
            # Some failures are logged without their cause (the HTTP exporter gives up before it logs a retry).
            error = f"{error} {_tcp_diagnosis(base.endpoint)}"
    out[base.signal] = dataclasses.replace(base, reachable=accepted, seconds=time.perf_counter() - started, error=error)


def _base_result(settings: Settings, signal: str) -> ProbeResult:
    kind = str(settings.values[_EXPORTER_SETTING[signal]])
    if kind == "prometheus":
        where = f"http://{settings.prometheus_host}:{settings.prometheus_port}/metrics"
        return ProbeResult(signal, kind, "-", where, None, error="a pull endpoint in the app: nothing to send")
    if kind != "otlp":
        return ProbeResult(
            signal, kind, "-", "-", None, error="written to the app's stdout" if kind == "console" else ""
        )
    endpoint = display_value("endpoint", settings.endpoint_for(signal))
    return ProbeResult(signal, kind, settings.protocol_for(signal), str(endpoint), None)


def probe_all(settings: Settings) -> list[ProbeResult]:
    """Send one test item per OTLP signal, all three at once, each bounded by its export timeout."""
    results: dict[str, ProbeResult] = {}
    senders: dict[str, tuple[ProbeResult, Callable[[], bool], Callable[[], None]]] = {}
    for signal in SIGNALS:
        base = _base_result(settings, signal)
        if base.exporter != "otlp":
            results[signal] = base
            continue
        try:
            senders[signal] = (base, *_sender(settings, signal))
        except Exception as exc:  # e.g. an unreadable certificate file: reported, not raised
            results[signal] = dataclasses.replace(
                base, reachable=False, error=_one_line(f"{type(exc).__name__}: {exc}")
            )
    threads: dict[str, threading.Thread] = {}
    with _captured_exporter_logs() as captured:
        for signal, (base, send, _close) in senders.items():
            thread = threading.Thread(
                target=_probe, args=(base, send, captured, results), name=f"obskit-check-{signal}", daemon=True
            )
            threads[signal] = thread
            thread.start()
        for signal, thread in threads.items():
            limit = settings.timeout_for(signal) + _SLACK_S
            thread.join(limit)
            if signal not in results:
                results[signal] = dataclasses.replace(
                    senders[signal][0], reachable=False, error=f"no answer within {limit:g}s"
                )
    for signal, (_base, _send, close) in senders.items():
        if not threads[signal].is_alive():
            with contextlib.suppress(Exception):
                close()
    # The details quote exporters' and libraries' messages, which may repeat a header value or a URL's password.
    secrets = secret_texts(settings)
    return [dataclasses.replace(results[signal], error=scrub(results[signal].error, secrets)) for signal in SIGNALS]


def results_table(results: list[ProbeResult]) -> Any:
    """A rich Table of the probes: signal, exporter, protocol, endpoint, result, round-trip time, error."""
    from rich.table import Table

    table = Table(title="OTLP endpoints", title_justify="left")
    for column in ("signal", "exporter", "protocol", "endpoint", "result", "time"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail", overflow="fold")
    for r in results:
        if r.reachable is None:
            outcome = "not sent" if r.exporter != "none" else "disabled"
        else:
            outcome = "[green]reachable[/green]" if r.reachable else "[red]unreachable[/red]"
        seconds = "-" if r.seconds is None else f"{r.seconds * 1000:.0f} ms"
        table.add_row(r.signal, r.exporter, r.protocol, r.endpoint, outcome, seconds, r.error)
    return table
