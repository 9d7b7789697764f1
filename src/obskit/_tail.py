"""``obskit tail``: a local OTLP receiver that prints what it receives, for development without a collector.

Spans are grouped by trace and printed as a tree once the trace's root has arrived (or after a grace period,
for traces whose root is elsewhere). Metrics feed a RED table (rate, error ratio, p50/p95/p99) per HTTP route
and per model stage, computed from the duration histograms' buckets; log records are printed with their trace
ids. On a terminal the table is redrawn live under the scrolling trees (rich ``Live``); when stdout is a pipe
everything is printed plainly, the table every few seconds and once more at the end. ``--json`` writes one JSON
object per span, metric point and log record instead.

The receiver calls back on its server threads; items go through a queue so that all state and printing stays
on the main thread, where Ctrl-C lands.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import math
import queue
import signal
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, TextIO

from . import _semconv as sc
from ._receiver import OtlpReceiver, ReceivedLog, ReceivedMetricPoint, ReceivedSpan
from .exceptions import ConfigError

DEFAULT_GRPC_PORT: Final = 4317
DEFAULT_HTTP_PORT: Final = 4318
QUANTILES: Final = (0.5, 0.95, 0.99)
# Span attributes shown next to each span, in this order (the SPEC's route, model, stage and batch size).
KEY_ATTRIBUTES: Final = (
    sc.ATTR_HTTP_ROUTE,
    sc.ATTR_HTTP_RESPONSE_STATUS_CODE,
    sc.ATTR_MODEL_NAME,
    sc.ATTR_MODEL_STAGE,
    sc.ATTR_MODEL_BATCH_SIZE,
    sc.ATTR_ERROR_TYPE,
)
# A trace whose root has arrived is printed once no span of it arrived for this long: children exported in a
# later batch (another process, a slow batch processor) still make it into the tree.
_SETTLE_S: Final = 0.3
_MAX_PENDING_TRACES: Final = 1000
_MAX_PRINTED_TRACES: Final = 10_000
_POLL_S: Final = 0.1
# A series whose first point started this long before tail did is a baseline, not new traffic.
_START_SLACK_NS: Final = 1_000_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``obskit tail``."""
    parser.description = (
        "Receive OTLP (gRPC and HTTP/protobuf) locally and print it: spans as trace trees, a RED table per HTTP "
        "route and per model stage (rate, error ratio, p50/p95/p99 from the duration histograms), and log records "
        "with their trace ids. Point an app at it with OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317. "
        "Ctrl-C stops it."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument(
        "--grpc-port", type=_port, default=DEFAULT_GRPC_PORT, help="OTLP/gRPC port, 0 for any free one (default: 4317)"
    )
    parser.add_argument(
        "--http-port", type=_port, default=DEFAULT_HTTP_PORT, help="OTLP/HTTP port, 0 for any free one (default: 4318)"
    )
    parser.add_argument(
        "--json", action="store_true", help="write one JSON object per span, metric point and log record"
    )
    parser.add_argument(
        "--duration", type=_seconds, default=0.0, metavar="SECONDS", help="stop after SECONDS (default: 0, never)"
    )
    parser.add_argument(
        "--window", type=_seconds, default=60.0, metavar="SECONDS", help="RED table window (default: 60)"
    )
    parser.add_argument(
        "--grace",
        type=_seconds,
        default=2.0,
        metavar="SECONDS",
        help="print a trace whose root never arrives after this long without new spans (default: 2)",
    )
    parser.add_argument(
        "--table-interval",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="when stdout is not a terminal, print the RED table this often if it changed (default: 5)",
    )


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port between 0 and 65535")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected 0 or a positive number of seconds")
    return value


def run(args: argparse.Namespace) -> int:
    """Run ``obskit tail`` until ``--duration`` passes, Ctrl-C or SIGTERM; 0 on a clean stop."""
    tail = Tail(
        sys.stdout,
        json_output=args.json,
        window_s=args.window or 60.0,
        grace_s=args.grace,
        table_interval_s=args.table_interval,
    )
    stop = threading.Event()
    previous = _on_sigterm(stop)
    try:
        try:
            rx = tail.start(args.host, args.grpc_port, args.http_port)
        except (OSError, RuntimeError) as exc:
            raise ConfigError(
                f"cannot listen on {args.host} (gRPC port {args.grpc_port}, HTTP port {args.http_port}): {exc}; "
                "is another receiver (a collector, another obskit tail) running? Choose ports with "
                "--grpc-port/--http-port"
            ) from None
        print(
            f"obskit tail: receiving OTLP on {rx.grpc_endpoint} (gRPC) and {rx.http_endpoint} (HTTP); Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        deadline = time.monotonic() + args.duration if args.duration else None
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how tail is meant to stop
            tail.pump(deadline=deadline, stop=stop.is_set)
        tail.finish()
    finally:
        tail.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    spans, points, logs = tail.counts
    print(f"obskit tail: received {spans} spans, {points} metric points, {logs} log records", file=sys.stderr)
    return 0


def _on_sigterm(stop: threading.Event) -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None
    # Ctrl-C must work even when SIGINT was ignored by whoever started us (a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())


# --------------------------------------------------------------------------------------------------------------
# RED statistics from cumulative (or delta) histogram points.


def histogram_quantile(q: float, bounds: Sequence[float], buckets: Sequence[int]) -> float | None:
    """The ``q`` quantile of a histogram, interpolated linearly inside the bucket, as Prometheus does.

    ``buckets`` has one more entry than ``bounds`` (the +Inf bucket); the first bucket's lower edge is 0. A rank in
    the +Inf bucket returns the highest bound. None when the histogram is empty.
    """
    total = sum(buckets)
    if total <= 0 or len(buckets) != len(bounds) + 1:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            if i == len(bounds):
                return float(bounds[-1]) if bounds else None
            lower = float(bounds[i - 1]) if i > 0 else 0.0
            upper = float(bounds[i])
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return float(bounds[-1]) if bounds else None


@dataclass(frozen=True, slots=True)
class _Delta:
    begin_ns: int
    end_ns: int
    count: int
    errors: int
    bounds: tuple[float, ...]
    buckets: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RedRow:
    """One row of the RED table: requests, rate and error ratio in the window, and latency quantiles (seconds)."""

    kind: str  # "http" or "model"
    label: str
    requests: int
    rate: float | None
    error_ratio: float | None
    quantiles: tuple[float | None, ...]


@dataclass
class _Group:
    deltas: deque[_Delta] = field(default_factory=deque)
    latest_ns: int = 0  # time of the newest point of any series, with or without new observations


class RedTable:
    """Rate, errors and duration per HTTP route and per model stage, from histogram points as they arrive.

    Cumulative points are turned into deltas per series (resource service and instance, attribute set); a series
    that started before ``started_ns`` contributes only from its second point, and a restarted series (start time
    changed, or count went down) starts over.
    """

    def __init__(self, window_s: float = 60.0, started_ns: int | None = None) -> None:
        self.window_ns = int(window_s * 1e9)
        self.started_ns = time.time_ns() if started_ns is None else started_ns
        self._last: dict[tuple[Any, ...], ReceivedMetricPoint] = {}
        self._groups: dict[tuple[str, str], _Group] = {}
        self.version = 0  # bumped on every change, so a printer can tell whether to print again

    def add(self, point: ReceivedMetricPoint) -> None:
        """Account for one metric point; points of other metrics are ignored."""
        if point.kind != "histogram":
            return
        if point.name == sc.METRIC_HTTP_SERVER_REQUEST_DURATION:
            key = ("http", _route_label(point.attributes))
            error = sc.ATTR_ERROR_TYPE in point.attributes or _status(point.attributes) >= 500
        elif point.name == sc.MODEL_DURATION:
            key = ("model", _stage_label(point.attributes))
            error = sc.ATTR_ERROR_TYPE in point.attributes
        else:
            return
        delta = self._delta(point)
        group = self._groups.setdefault(key, _Group())
        if group.latest_ns == 0:
            self.version += 1  # a new row
        # Points keep coming for an idle route (cumulative export repeats the totals): they move its window on,
        # so old observations leave it even when nothing new arrives.
        group.latest_ns = max(group.latest_ns, point.time_unix_nano)
        if delta is not None and delta.count > 0:
            group.deltas.append(dataclasses.replace(delta, errors=delta.count) if error else delta)
            self.version += 1
        while group.deltas and group.deltas[0].end_ns < group.latest_ns - self.window_ns:
            group.deltas.popleft()
            self.version += 1

    def _delta(self, p: ReceivedMetricPoint) -> _Delta | None:
        series = (
            p.name,
            p.resource.get("service.name"),
            p.resource.get("service.instance.id"),
            tuple(sorted((k, repr(v)) for k, v in p.attributes.items())),
        )
        previous = self._last.get(series)
        self._last[series] = p
        count = int(p.count or 0)
        whole = _Delta(p.start_time_unix_nano, p.time_unix_nano, count, 0, p.explicit_bounds, p.bucket_counts)
        if p.temporality == "DELTA":
            return whole
        restarted = previous is not None and (
            previous.start_time_unix_nano != p.start_time_unix_nano
            or count < int(previous.count or 0)
            or previous.explicit_bounds != p.explicit_bounds
        )
        if previous is None or restarted:
            # The whole point is new traffic only if its series began after tail started.
            return whole if p.start_time_unix_nano >= self.started_ns - _START_SLACK_NS else None
        assert previous is not None
        buckets = tuple(c - b for c, b in zip(p.bucket_counts, previous.bucket_counts, strict=False))
        return _Delta(
            previous.time_unix_nano,
            p.time_unix_nano,
            count - int(previous.count or 0),
            0,
            p.explicit_bounds,
            buckets,
        )

    def rows(self) -> list[RedRow]:
        """Rows for every route and stage seen, HTTP first, each sorted by label."""
        out = []
        for (kind, label), group in sorted(self._groups.items()):
            deltas = list(group.deltas)
            if not deltas:
                out.append(RedRow(kind, label, 0, 0.0, None, (None,) * len(QUANTILES)))
                continue
            end = max(group.latest_ns, *(d.end_ns for d in deltas))
            begin = max(end - self.window_ns, min(d.begin_ns for d in deltas))
            requests = sum(d.count for d in deltas)
            errors = sum(d.errors for d in deltas)
            bounds = max((d.bounds for d in deltas), key=lambda b: sum(x.bounds == b for x in deltas))
            merged = [0] * (len(bounds) + 1)
            for d in deltas:
                if d.bounds == bounds and len(d.buckets) == len(merged):
                    merged = [a + b for a, b in zip(merged, d.buckets, strict=True)]
            span_s = (end - begin) / 1e9
            out.append(
                RedRow(
                    kind=kind,
                    label=label,
                    requests=requests,
                    rate=requests / span_s if span_s > 0 else None,
                    error_ratio=errors / requests if requests else None,
                    quantiles=tuple(histogram_quantile(q, bounds, merged) for q in QUANTILES),
                )
            )
        return out


def _status(attributes: dict[str, Any]) -> int:
    try:
        return int(attributes.get(sc.ATTR_HTTP_RESPONSE_STATUS_CODE) or 0)
    except (TypeError, ValueError):
        return 0


def _route_label(attributes: dict[str, Any]) -> str:
    method = str(attributes.get(sc.ATTR_HTTP_REQUEST_METHOD, "")) or "_OTHER"
    route = attributes.get(sc.ATTR_HTTP_ROUTE)
    return f"{method} {route}" if route else method


def _stage_label(attributes: dict[str, Any]) -> str:
    stage = attributes.get(sc.ATTR_MODEL_STAGE, "?")
    model = attributes.get(sc.ATTR_MODEL_NAME, "?")
    return f"{stage} {model}"


# --------------------------------------------------------------------------------------------------------------
# Traces.


@dataclass
class _Pending:
    spans: list[ReceivedSpan]
    first_seen: float
    last_seen: float
    has_root: bool = False


class TraceAssembler:
    """Groups spans by trace and hands a trace out once its root arrived and things settled, or after ``grace_s``.

    Spans of a trace already handed out come out again later as a trace of their own (late spans).
    """

    def __init__(self, grace_s: float = 2.0, settle_s: float = _SETTLE_S) -> None:
        self.grace_s = grace_s
        self.settle_s = settle_s
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._done: OrderedDict[str, None] = OrderedDict()

    def add(self, span: ReceivedSpan, now: float) -> None:
        """Remember one span received at monotonic time ``now``."""
        pending = self._pending.get(span.trace_id)
        if pending is None:
            pending = self._pending[span.trace_id] = _Pending([], now, now)
        pending.spans.append(span)
        pending.last_seen = now
        pending.has_root = pending.has_root or not span.parent_span_id

    def ready(self, now: float, *, everything: bool = False) -> list[tuple[list[ReceivedSpan], bool]]:
        """Traces to print now, as (spans, late) pairs; ``everything`` flushes all pending ones."""
        out = []
        for trace_id, p in list(self._pending.items()):
            quiet = now - p.last_seen
            if (
                everything
                or (p.has_root and quiet >= self.settle_s)
                or quiet >= self.grace_s
                or now - p.first_seen >= 5 * self.grace_s
                or len(self._pending) > _MAX_PENDING_TRACES
            ):
                del self._pending[trace_id]
                out.append((p.spans, trace_id in self._done))
                self._done[trace_id] = None
                self._done.move_to_end(trace_id)
                while len(self._done) > _MAX_PRINTED_TRACES:
                    self._done.popitem(last=False)
        return out


def format_duration(seconds: float | None, *, compact: bool = False) -> str:
    """``0.42 ms``, ``12.3 ms``, ``1.20 s`` (compact: ``0.42ms``, ``12.3ms``, ``1.2s``); ``-`` for None."""
    if seconds is None:
        return "-"
    if compact:
        return f"{seconds * 1000:.3g}ms" if seconds < 1 else f"{seconds:.3g}s"
    if seconds < 0.001:
        return f"{seconds * 1000:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def span_label(span: ReceivedSpan) -> Any:
    """One line for a span: name, duration, status, key attributes and the exception, if any (a rich Text)."""
    from rich.text import Text

    text = Text()
    text.append(span.name, style="bold")
    text.append(f"  {format_duration(span.duration_s)}", style="cyan")
    if span.status_code == "ERROR":
        text.append("  ERROR", style="bold red")
        if span.status_message:
            text.append(f" {span.status_message}", style="red")
    else:
        text.append("  ok", style="green")
    for key in KEY_ATTRIBUTES:
        if key in span.attributes:
            text.append(f"  {key}={span.attributes[key]}", style="dim" if key != sc.ATTR_ERROR_TYPE else "red")
    for name, attributes in span.events:
        if name == "exception" and not span.status_message:  # the status message usually says the same
            kind, message = attributes.get("exception.type", ""), attributes.get("exception.message", "")
            text.append(f"  exception {kind}: {message}", style="red")
    return text


def trace_tree(spans: Iterable[ReceivedSpan], *, late: bool = False) -> Any:
    """A rich Tree of one trace: spans under their parents, siblings by start time; orphans at the top."""
    from rich.text import Text
    from rich.tree import Tree

    spans = sorted(spans, key=lambda s: (s.start_time_ns, s.span_id))
    by_id = {s.span_id: s for s in spans}
    children: dict[str, list[ReceivedSpan]] = {}
    tops = []
    for s in spans:
        if s.parent_span_id and s.parent_span_id in by_id and s.parent_span_id != s.span_id:
            children.setdefault(s.parent_span_id, []).append(s)
        else:
            tops.append(s)
    trace_id = spans[0].trace_id if spans else ""
    service = next((s.resource.get("service.name") for s in tops if s.resource.get("service.name")), None)
    header = Text(f"trace {trace_id}", style="bold magenta")
    if service:
        header.append(f"  service={service}", style="magenta")
    if late:
        header.append("  (late spans of a trace printed earlier)", style="yellow")
    if any(s.parent_span_id for s in tops):
        header.append("  (root not received)", style="yellow")
    tree = Tree(header)

    def add(node: Any, span: ReceivedSpan, depth: int) -> None:
        branch = node.add(span_label(span))
        if depth < 64:  # a malformed parent cycle must not recurse forever
            for child in children.get(span.span_id, []):
                add(branch, child, depth + 1)

    for top in tops:
        add(tree, top, 0)
    return tree


def log_line(record: ReceivedLog) -> Any:
    """One line for a log record: time, severity, logger (scope), body, and its trace and span ids."""
    from rich.text import Text

    when = (
        datetime.fromtimestamp(record.time_unix_nano / 1e9).strftime("%H:%M:%S.%f")[:-3]
        if record.time_unix_nano
        else ""
    )
    severity = record.severity_text or str(record.severity_number)
    style = "red" if record.severity_number >= 17 else "yellow" if record.severity_number >= 13 else None
    text = Text("log ", style="bold blue")
    text.append(f"{when} ")
    text.append(f"{severity:<7}", style=style)
    text.append(f" {record.scope}: " if record.scope else " ")
    text.append(str(record.body))
    if record.trace_id and record.trace_id.strip("0"):
        text.append(f"  trace_id={record.trace_id} span_id={record.span_id}", style="dim")
    return text


def red_table(rows: Sequence[RedRow], window_s: float) -> Any:
    """A rich Table of RED rows: HTTP routes, then model stages."""
    from rich import box
    from rich.table import Table

    # No vertical rules and short headers: the table fits an 80-column terminal.
    table = Table(title=f"RED, last {window_s:g}s", title_justify="left", box=box.SIMPLE_HEAVY, pad_edge=False)
    table.add_column("route / stage", overflow="ellipsis", no_wrap=True)
    for column in ("count", "req/s", "errors", *(f"p{q * 100:g}" for q in QUANTILES)):
        table.add_column(column, justify="right", no_wrap=True, min_width=len(column) if column[0] != "p" else 6)
    http = [r for r in rows if r.kind == "http"]
    model = [r for r in rows if r.kind == "model"]
    for section in (http, model):
        for r in section:
            errors = "-" if r.error_ratio is None else f"{r.error_ratio * 100:.1f}%"
            table.add_row(
                r.label,
                str(r.requests),
                "-" if r.rate is None else f"{r.rate:.2f}",
                errors,
                *(format_duration(v, compact=True) for v in r.quantiles),
                style="red" if r.error_ratio else None,
            )
        if section is http and http and model:
            table.add_section()
    if not rows:
        table.add_row("(waiting for http.server.request.duration / obskit.model.duration)", *[""] * 6)
    return table


# --------------------------------------------------------------------------------------------------------------
# The printer.


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)


def json_record(signal_name: str, item: Any) -> str:
    """One JSON line for a received item: ``{"type": "span"|"metric"|"log", ...every field...}``."""
    kind = {"traces": "span", "metrics": "metric", "logs": "log"}[signal_name]
    data = {"type": kind, **dataclasses.asdict(item)}
    if kind == "span":
        data["duration_s"] = item.duration_s
    return json.dumps(data, default=_json_default, sort_keys=False)


class Tail:
    """The state behind ``obskit tail``: receiver, trace assembly, RED table and output.

    ``start()`` binds the receiver, ``pump()`` processes what arrives until a deadline or a stop condition,
    ``finish()`` prints what is still pending and the final table, ``close()`` stops the receiver.
    """

    def __init__(
        self,
        out: TextIO,
        *,
        json_output: bool = False,
        window_s: float = 60.0,
        grace_s: float = 2.0,
        table_interval_s: float = 5.0,
        live: bool | None = None,
    ) -> None:
        from rich.console import Console

        self.out = out
        self.json_output = json_output
        self.window_s = window_s
        self.table_interval_s = table_interval_s
        self.live = (not json_output and out.isatty()) if live is None else live
        # Piped output: no colour codes, and long span lines kept whole (for grep) rather than cut or wrapped.
        self.console = Console(file=out, highlight=False, width=None if self.live else 1000, soft_wrap=not self.live)
        self.traces = TraceAssembler(grace_s=grace_s)
        self.red = RedTable(window_s=window_s)
        self._queue: queue.SimpleQueue[tuple[str, list[object]]] = queue.SimpleQueue()
        self._rx: OtlpReceiver | None = None
        self._live: Any = None
        self._printed_version = 0
        self._last_table = time.monotonic()
        self.counts = [0, 0, 0]  # spans, metric points, log records

    def start(self, host: str, grpc_port: int, http_port: int) -> OtlpReceiver:
        """Bind the receiver (and, on a terminal, start the live table)."""
        self._rx = OtlpReceiver(host, grpc_port, http_port, on_receive=self._received)
        self._rx.start()
        if self.live:
            from rich.live import Live

            self._live = Live(
                red_table([], self.window_s), console=self.console, refresh_per_second=2, auto_refresh=True
            )
            self._live.start()
        return self._rx

    def _received(self, signal_name: str, items: list[object]) -> None:  # on a receiver thread
        self._queue.put((signal_name, items))

    def pump(self, *, deadline: float | None = None, stop: Callable[[], bool] = lambda: False) -> None:
        """Process and print what arrives until monotonic ``deadline`` (None: forever) or ``stop()`` is true."""
        while not stop() and (deadline is None or time.monotonic() < deadline):
            timeout = _POLL_S if deadline is None else max(0.0, min(_POLL_S, deadline - time.monotonic()))
            try:
                signal_name, items = self._queue.get(timeout=timeout)
            except queue.Empty:
                pass
            else:
                self._handle(signal_name, items)
                self._drain()  # what else is queued, before printing
            if self._rx is not None:
                self._rx.clear()  # everything is in our own state; keep the receiver's memory flat
            self._print_ready(time.monotonic())

    def _drain(self) -> None:
        while True:
            try:
                self._handle(*self._queue.get_nowait())
            except queue.Empty:
                return

    def _handle(self, signal_name: str, items: list[object]) -> None:
        now = time.monotonic()
        for item in items:
            if self.json_output:
                self.out.write(json_record(signal_name, item) + "\n")
            if isinstance(item, ReceivedSpan):
                self.counts[0] += 1
                if not self.json_output:
                    self.traces.add(item, now)
            elif isinstance(item, ReceivedMetricPoint):
                self.counts[1] += 1
                self.red.add(item)
            elif isinstance(item, ReceivedLog):
                self.counts[2] += 1
                if not self.json_output:
                    self._print(log_line(item))
        if self.json_output:
            self.out.flush()

    def _print(self, renderable: Any) -> None:
        self.console.print(renderable)

    def _print_ready(self, now: float, *, everything: bool = False) -> None:
        if self.json_output:
            return
        for spans, late in self.traces.ready(now, everything=everything):
            self._print(trace_tree(spans, late=late))
        if self._live is not None:
            if self.red.version != self._printed_version:
                self._printed_version = self.red.version
                self._live.update(red_table(self.red.rows(), self.window_s))
        elif self.red.version != self._printed_version and now - self._last_table >= self.table_interval_s:
            self._print_table(now)

    def _print_table(self, now: float) -> None:
        self._printed_version = self.red.version
        self._last_table = now
        self.console.print(red_table(self.red.rows(), self.window_s))
        self.out.flush()

    def finish(self) -> None:
        """Drain the queue, print every pending trace, and print the final RED table (not in ``--json``)."""
        self._drain()
        self._print_ready(time.monotonic(), everything=True)
        if self._live is not None:
            self._live.update(red_table(self.red.rows(), self.window_s))
            self._live.stop()
            self._live = None
        elif not self.json_output and self.red.rows():
            self._print_table(time.monotonic())
        self.out.flush()

    def close(self) -> None:
        """Stop the live display and the receiver."""
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._rx is not None:
            self._rx.stop(grace=0.5)
