"""Where obskit's per-request time goes: in-process ablations and cProfile of the benchmark apps.

Run through ``bash benchmarks/run.sh`` (``ONLY=profile`` for this step alone), or
``benchmarks/.venv/bin/python benchmarks/profile_obskit.py --out /tmp/profile``.

Every configuration runs in a fresh child process (obskit.init() and OpenTelemetry's globals are per process)
that imports the benchmark app and drives it directly: a WSGI call for Flask, an ASGI call on a uvloop loop for
FastAPI, no server and no socket. So the figures are the app + instrumentation only, without HTTP parsing.
Each child reports CPU µs per request, split into the request thread and the background threads (batch span
processor, OTLP/gRPC export, metric reader). Ablations peel the full setup apart layer by layer; the
differences between them are the cost of each layer. Then obskit full (and metrics-only, and the bare contrib
middleware) run once more under py-spy, an out-of-process sampler that adds no per-call overhead: samples are
grouped by component (the file of the innermost Python frame), with µs per request = share of the request
thread's samples x the unprofiled request-thread time, and once more under cProfile for exact calls per
request. (cProfile's and pyinstrument's own per-call overhead inflate call-heavy code 3-6x here, so their
times are not used.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SRC = Path(os.environ.get("OBSKIT_SRC") or ROOT / "src")  # see bench_http.SRC
BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]}'

# name -> (VARIANT, extra env, description). "contrib_*" configurations instrument the bare app in the child.
CONFIGS: dict[str, tuple[str, dict[str, str], str]] = {
    "bare": ("bare", {}, "no instrumentation"),
    "obskit_disabled": ("obskit_disabled", {"OTEL_SDK_DISABLED": "true"}, "obskit decorators, SDK disabled"),
    "contrib_noop": ("bare", {}, "contrib instrumentor (stable semconv), no-op tracer and meter"),
    "contrib_metrics": ("bare", {}, "contrib, no-op tracer, SDK meter (no reader export)"),
    "contrib_traces": ("bare", {}, "contrib, SDK tracer (batch processor, null exporter), no-op meter"),
    "contrib_both": ("bare", {}, "contrib, SDK tracer + SDK meter (exemplars trace_based)"),
    "obskit_stages_only": (
        "obskit_full",
        {"OBSKIT_AUTO_INSTRUMENT": "false"},
        "obskit.init() + 3 stage decorators, app not instrumented (stage spans are roots)",
    ),
    "obskit_metrics": ("obskit_metrics", {"OTEL_TRACES_EXPORTER": "none"}, "obskit metrics-only"),
    "obskit_full_noexemplar": (
        "obskit_full",
        {"OTEL_METRICS_EXEMPLAR_FILTER": "always_off"},
        "obskit full, exemplars off",
    ),
    "obskit_full": ("obskit_full", {}, "obskit full (OTLP/gRPC to the receiver)"),
    "native_both": (
        "bare",
        {},
        "FastAPI's own telemetry (fastapi.telemetry, operation spans and logs off), SDK tracer + SDK meter",
    ),
    "otel": ("otel", {}, "stock OpenTelemetry (contrib default semconv + 3 spans + 3 histograms)"),
    "bare@1000": ("bare", {"ROUTES": "1000"}, "no instrumentation, 1,000 routes"),
    "obskit_full@1000": ("obskit_full", {"ROUTES": "1000"}, "obskit full, 1,000 routes"),
    "native_both@1000": ("bare", {"ROUTES": "1000"}, "FastAPI's own telemetry as above, 1,000 routes"),
}
# Configurations that exist for one framework only.
ONLY = {"native_both": "fastapi", "native_both@1000": "fastapi"}
PROFILED = ("bare", "contrib_noop", "obskit_metrics", "obskit_full")

# Component buckets: first match on the innermost Python frame's file path wins.
BUCKETS = [
    ("OTLP exporter: protobuf encoding", ("exporter/otlp/proto/common", "google/protobuf", "opentelemetry/proto")),
    ("OTLP exporter: gRPC", ("exporter/otlp/proto/grpc", "/grpc/")),
    ("obskit stage decorators", ("obskit/_stages",)),
    ("obskit guard (LabelGuard filter)", ("obskit/_guard", "obskit/metrics")),
    ("obskit other", ("/obskit/",)),
    ("contrib ASGI/WSGI middleware", ("instrumentation/asgi", "instrumentation/wsgi")),
    ("contrib Flask/FastAPI instrumentor", ("instrumentation/flask", "instrumentation/fastapi")),
    ("contrib shared helpers (_semconv, util.http, utils)", ("opentelemetry/instrumentation", "util/http")),
    ("SDK metrics: exemplars", ("sdk/metrics/_internal/exemplar",)),
    ("SDK metrics: record, aggregation", ("sdk/metrics",)),
    ("SDK trace: spans, processor", ("sdk/trace", "sdk/util")),
    ("OTel API: context, attributes, propagators", ("opentelemetry/",)),
    ("wrapt", ("wrapt",)),
    ("the app: model stages and handler", ("benchmarks/_benchapp", "benchmarks/app_")),
    ("benchmark driver", ("benchmarks/profile_obskit",)),
    ("framework (flask, werkzeug, starlette, fastapi, pydantic, json, uvloop)", ("",)),
]
# A standard-library leaf frame (contextvars, typing.cast, abc, a dataclass __init__ "<string>", random for
# ids) is charged to its nearest caller outside the standard library: the component that asked for it.
_STDLIB = (f"/lib/python{sys.version_info[0]}.{sys.version_info[1]}/",)
# Background threads parked in these are idle, whatever py-spy thinks.
_IDLE = ("threading.py", "queue.py", "selectors.py", "concurrent/futures/thread.py")


# ---------------------------------------------------------------------------------------------------------------
# child


def _flask_driver(app: Any) -> Any:
    base = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/predict",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(BODY)),
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "wrk",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        if not status.startswith("200"):
            raise RuntimeError(status)

    # gunicorn's sync worker (bench_http.py) serves one request per connection: a new client port every time.
    ports = itertools.cycle([str(port) for port in range(32768, 61000)])

    def _drive_wsgi(n: int) -> None:
        for _ in range(n):
            environ = dict(base)
            environ["REMOTE_PORT"] = next(ports)
            environ["wsgi.input"] = io.BytesIO(BODY)
            result = app(environ, start_response)
            for _chunk in result:
                pass
            if hasattr(result, "close"):
                result.close()

    return _drive_wsgi


def _fastapi_driver(app: Any) -> Any:
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", b"wrk"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ]
    message = {"type": "http.request", "body": BODY, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start" and msg["status"] != 200:
            raise RuntimeError(msg)

    async def _drive_asgi(n: int) -> None:
        for _ in range(n):
            scope = {
                "type": "http",
                "asgi": {"version": "3.0", "spec_version": "2.4"},
                "http_version": "1.1",
                "server": ("127.0.0.1", 8000),
                "client": ("127.0.0.1", 50000),
                "scheme": "http",
                "method": "POST",
                "root_path": "",
                "path": "/predict",
                "raw_path": b"/predict",
                "query_string": b"",
                "headers": list(headers),
                "state": {},
            }
            await app(scope, receive, send)

    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()

    def run(n: int) -> None:
        loop.run_until_complete(_drive_asgi(n))

    return run


def _instrument_contrib(framework: str, app: Any, config: str) -> None:
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.trace import NoOpTracerProvider

    from obskit._integrations._http import force_stable_http_semconv

    class Null(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider: Any = NoOpTracerProvider()
    meter_provider: Any = NoOpMeterProvider()
    if config in ("contrib_traces", "contrib_both"):
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(BatchSpanProcessor(Null()))
    if config in ("contrib_metrics", "contrib_both"):
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    force_stable_http_semconv()  # as obskit does
    if framework == "flask":
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        FlaskInstrumentor.instrument_app(app, tracer_provider=tracer_provider, meter_provider=meter_provider)
    else:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=tracer_provider, meter_provider=meter_provider, exclude_spans=["receive", "send"]
        )


def _native_fastapi(app: Any) -> None:
    """FastAPI >= 0.16x traces and meters itself once global SDK providers exist and contrib is absent."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Null(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    if not hasattr(app, "_telemetry"):
        raise SystemExit("this FastAPI has no native telemetry (fastapi.telemetry)")
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Null()))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    # The same as FastAPI(telemetry={...}) at construction: one server span, RED metrics, no operation spans.
    app._telemetry.update(operation_spans=False, logs=False)


def prepare(args: argparse.Namespace) -> Any:
    """Import the benchmark app, instrument it as ``args.config`` says and return its driver: ``run(n)``."""
    sys.path[:0] = [str(HERE), str(SRC)]
    module = __import__("app_flask" if args.framework == "flask" else "app_fastapi")
    app = module.app
    if args.config.startswith("contrib_"):
        _instrument_contrib(args.framework, app, args.config)
    elif args.config.startswith("native_"):
        _native_fastapi(app)
    elif args.config == "obskit_stages_only" and hasattr(app, "_telemetry"):
        # Without contrib in its stack, FastAPI's own telemetry would trace and meter the request through
        # obskit's global providers: switch it off, so that only the stages are measured.
        app._telemetry.update(tracing=False, metrics=False, logs=False)
    return _flask_driver(app) if args.framework == "flask" else _fastapi_driver(app)


def child(args: argparse.Namespace) -> int:
    import threading

    run = prepare(args)
    run(args.warmup)
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    t0, p0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
    if profiler is not None:
        profiler.enable()
    run(args.requests)
    if profiler is not None:
        profiler.disable()
    t1, p1, m1 = time.perf_counter(), time.process_time(), time.thread_time()
    if profiler is not None:
        profiler.dump_stats(args.profile)
    n = args.requests
    print(
        json.dumps(
            {
                "wall_us": (t1 - t0) / n * 1e6,
                "cpu_us": (p1 - p0) / n * 1e6,
                "request_thread_us": (m1 - m0) / n * 1e6,
                "background_us": ((p1 - p0) - (m1 - m0)) / n * 1e6,
                "threads": threading.active_count(),
            }
        ),
        flush=True,
    )
    with contextlib.suppress(Exception):
        import obskit

        obskit.shutdown(timeout=5)
    return 0


# ---------------------------------------------------------------------------------------------------------------
# parent


def config_env(config: str, ports: dict[str, int], src: Path = SRC) -> dict[str, str]:
    """The environment of a child process serving ``config`` with obskit imported from ``src``."""
    from bench_http import app_env

    variant, extra, _ = CONFIGS[config]
    env = app_env(variant, ports, src)
    env.update(extra)
    return env


def spawn(
    framework: str,
    config: str,
    args: argparse.Namespace,
    ports: dict[str, int],
    profile: Path | None = None,
    profiler: str = "cprofile",
) -> dict[str, float]:
    """Run one child; ``profiler`` "cprofile" (in the child) or "py-spy" (sampling it from outside)."""
    from bench_paired import pinned

    env = config_env(config, ports)
    child = [str(Path(__file__)), "--child", "--framework", framework, "--config", config]
    cmd = pinned([*child, "--requests", str(args.requests), "--warmup", str(args.warmup)], "1" if args.pin else "")
    if profile is not None and profiler == "cprofile":
        cmd += ["--profile", str(profile)]
    elif profile is not None:
        py_spy = Path(sys.executable).parent / "py-spy"
        # --function: aggregate by a function's first line (as cProfile keys it); raw = collapsed stacks.
        sampler = [str(py_spy), "record", "--rate", str(args.rate), "--function", "--full-filenames"]
        cmd = [*sampler, "--format", "raw", "-o", str(profile), "--", *cmd]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=HERE)
    if out.returncode != 0:
        raise RuntimeError(f"{framework}/{config} failed:\n{out.stderr[-3000:]}")
    for line in reversed(out.stdout.strip().splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    raise RuntimeError(f"{framework}/{config}: no result:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


def bucket_of(filename: str) -> str:
    for name, needles in BUCKETS:
        if any(needle in filename for needle in needles):
            return name
    return BUCKETS[-1][0]


def _short(key: str) -> str:
    path, _, rest = key.rpartition(":")
    parts = Path(path).parts
    return ("/".join(parts[-2:]) if len(parts) >= 2 else path) + ":" + rest


def _instrumentation(key: str) -> bool:
    return any(s in key for s in ("opentelemetry", "obskit", "wrapt"))


def _parse_collapsed(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw output: one ``frame;frame;...;leaf count`` line per distinct stack; frames become
    ``file:firstline(function)`` keys, as cProfile names them."""
    samples = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        keys = []
        for frame in stack.split(";"):
            func, _, where = frame.partition(" (")
            # py-spy gives qualified names (Class.method, f.<locals>.g); cProfile the bare code name.
            keys.append(f"{where.rstrip(')')}({func.rpartition('.')[2]})")
        samples.append((keys, int(count)))
    return samples


def analyse(
    sampled: Path, cprof: Path | None, requests: int, request_thread_us: float, background_us: float, top: int
) -> str:
    """Components and top functions from py-spy's samples (scaled to unprofiled µs); calls from cProfile."""
    samples = _parse_collapsed(sampled)
    main = [(k, n) for k, n in samples if any(f.endswith(("(_drive_wsgi)", "(_drive_asgi)")) for f in k)]
    background = [
        (k, n)
        for k, n in samples
        if (k, n) not in main and any("threading.py" in f for f in k) and not any(idle in k[-1] for idle in _IDLE)
    ]
    main_total = sum(n for _, n in main) or 1
    bg_total = sum(n for _, n in background) or 1
    calls: dict[str, float] = {}
    if cprof is not None:
        for (filename, line, func), (_cc, nc, _tt, _ct, _callers) in pstats.Stats(str(cprof)).stats.items():  # type: ignore[attr-defined]
            calls[f"{filename}:{line}({func})"] = nc / requests

    def owner(keys: list[str]) -> str:
        for key in reversed(keys):
            path = key.rpartition(":")[0]
            if not path.startswith("<") and ("site-packages" in path or not any(stdlib in path for stdlib in _STDLIB)):
                return path
        return keys[-1].rpartition(":")[0]

    def components(group: list[tuple[list[str], int]]) -> dict[str, int]:
        out: dict[str, int] = {}
        for keys, n in group:
            b = bucket_of(owner(keys))
            out[b] = out.get(b, 0) + n
        return out

    lines = [
        f"py-spy at {main_total} request-thread samples, scaled to {request_thread_us:.0f} µs/request "
        f"(request thread, unprofiled) and {bg_total} background samples to {background_us:.0f} µs/request.",
        "",
        "| component (self time, request thread) | µs/request | share |",
        "|---|---:|---:|",
    ]
    for name, n in sorted(components(main).items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {n / main_total * request_thread_us:.1f} | {n / main_total:.0%} |")
    if background and background_us >= 1:
        lines += ["", "| component (self time, background threads) | µs/request | share |", "|---|---:|---:|"]
        for name, n in sorted(components(background).items(), key=lambda kv: -kv[1]):
            lines.append(f"| {name} | {n / bg_total * background_us:.1f} | {n / bg_total:.0%} |")

    own: dict[str, int] = {}
    cumulative: dict[str, int] = {}
    for keys, n in main:
        own[keys[-1]] = own.get(keys[-1], 0) + n
        for key in set(keys):
            cumulative[key] = cumulative.get(key, 0) + n

    def us(n: int) -> float:
        return n / main_total * request_thread_us

    lines += [
        "",
        f"Top {top} instrumentation functions of the request thread by cumulative time "
        "(calls/request from a cProfile run of the same configuration):",
        "",
        "| function | calls/req | cumulative µs/req | self µs/req |",
        "|---|---:|---:|---:|",
    ]
    ranked = sorted(
        (k for k in cumulative if _instrumentation(k) and "profile_obskit" not in k), key=lambda k: -cumulative[k]
    )
    for key in ranked[:top]:
        n = calls.get(key)
        lines.append(
            f"| `{_short(key)}` | {'' if n is None else f'{n:.1f}'} | {us(cumulative[key]):.1f} | "
            f"{us(own.get(key, 0)):.1f} |"
        )
    return "\n".join(lines)


def encode_cost(batches: int = 20) -> tuple[float, float]:
    """CPU µs per span of the OTLP exporter's protobuf encoding (Python objects) and of serialising them.

    py-spy counts a thread blocked inside gRPC's C call as busy, so the background split of the profiles
    cannot tell encoding from waiting; this measures the encoding directly, on obskit-shaped spans (a server
    span with 10 attributes and 3 stage spans with 4).
    """
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench", "service.version": "1.0.0"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("obskit")
    server = {
        "http.request.method": "POST",
        "url.scheme": "http",
        "url.path": "/predict",
        "http.route": "/predict",
        "server.address": "127.0.0.1",
        "server.port": 8000,
        "network.protocol.version": "1.1",
        "user_agent.original": "wrk",
        "client.address": "127.0.0.1",
        "http.response.status_code": 200,
    }
    for _ in range(128):  # 512 spans: one full batch of the batch span processor
        with tracer.start_as_current_span("POST /predict", kind=SpanKind.SERVER, attributes=server):
            for stage in ("preprocess", "inference", "postprocess"):
                attributes = {"model.name": "iris", "model.version": "1", "model.stage": stage, "model.batch_size": 2}
                with tracer.start_as_current_span(f"{stage} iris", attributes=attributes):
                    pass
    spans = exporter.get_finished_spans()
    encode_spans(spans).SerializeToString()
    t0 = time.process_time()
    for _ in range(batches):
        request = encode_spans(spans)
    t1 = time.process_time()
    for _ in range(batches):
        request.SerializeToString()
    t2 = time.process_time()
    provider.shutdown()
    per_span = 1e6 / batches / len(spans)
    return (t1 - t0) * per_span, (t2 - t1) * per_span


def parent(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(HERE))
    from bench_http import receiver

    args.out.mkdir(parents=True, exist_ok=True)
    configs = [c for c in CONFIGS if not args.configs or c in args.configs]
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    report: list[str] = []
    (args.out / "logs").mkdir(exist_ok=True)
    with receiver("0" if args.pin else None, args.out / "logs") as (_rx, ports):
        for rnd in range(args.rounds):
            for framework in args.frameworks:
                for config in configs:
                    if ONLY.get(config, framework) != framework:
                        continue
                    r = spawn(framework, config, args, ports)
                    results.setdefault((framework, config), []).append(r)
                    print(
                        f"[round {rnd + 1}] {framework:<8} {config:<24} cpu {r['cpu_us']:7.1f} µs/req "
                        f"(request thread {r['request_thread_us']:7.1f}, background {r['background_us']:6.1f})",
                        flush=True,
                    )
        profiles: dict[tuple[str, str], tuple[Path, Path]] = {}
        for framework in args.frameworks:
            for config in PROFILED:
                if config in configs:
                    sampled = args.out / f"profile-{framework}-{config}.collapsed.txt"
                    cprof = args.out / f"profile-{framework}-{config}.prof"
                    sampled_args = argparse.Namespace(**{**vars(args), "requests": args.pyspy_requests})
                    spawn(framework, config, sampled_args, ports, sampled, "py-spy")
                    # cProfile only counts calls here: a few hundred requests are plenty.
                    counted = argparse.Namespace(**{**vars(args), "requests": args.cprofile_requests})
                    spawn(framework, config, counted, ports, cprof, "cprofile")
                    profiles[(framework, config)] = (sampled, cprof)

    def m(framework: str, config: str, key: str) -> float:
        # The least CPU of the rounds: on a shared machine, contention only ever adds (cache, SMT siblings).
        return min(r[key] for r in results[(framework, config)])

    report += [
        f"In-process, {args.requests} requests per child after {args.warmup} warm-up, least of {args.rounds} "
        "rounds; CPU µs per request (request thread + background threads), no HTTP server.",
        "",
        "| configuration | "
        + " | ".join(f"{fw} CPU µs/req | {fw} over bare | {fw} background" for fw in args.frameworks)
        + " |",
        "|---|" + "---:|---:|---:|" * len(args.frameworks),
    ]
    for config in configs:
        cells = []
        for fw in args.frameworks:
            if (fw, config) not in results:
                cells.append("- | - | -")
                continue
            base = "bare@1000" if config.endswith("@1000") else "bare"
            cpu = m(fw, config, "cpu_us")
            over = cpu - m(fw, base, "cpu_us") if base in configs else float("nan")
            cells.append(f"{cpu:.0f} | {over:+.0f} | {m(fw, config, 'background_us'):.0f}")
        report.append(f"| {config}: {CONFIGS[config][2]} | " + " | ".join(cells) + " |")
    layers = [
        ("contrib middleware with no-op providers (attributes, URL, route, hooks)", "contrib_noop", "bare"),
        ("+ SDK HTTP metrics through contrib (duration + active requests)", "contrib_metrics", "contrib_noop"),
        ("+ SDK server span through contrib (batch processor, null exporter)", "contrib_traces", "contrib_noop"),
        ("3 obskit stages alone (3 spans, 10 measurements, OTLP export)", "obskit_stages_only", "bare"),
        ("obskit metrics-only, all of it", "obskit_metrics", "bare"),
        ("obskit full, all of it", "obskit_full", "bare"),
        ("exemplars (obskit full minus exemplar filter always_off)", "obskit_full", "obskit_full_noexemplar"),
        ("1,000 routes instead of 10 (obskit full's overhead growth)", "obskit_full@1000", "bare@1000"),
        ("FastAPI's own telemetry instead of contrib (server span + HTTP metrics)", "native_both", "bare"),
    ]
    report += [
        "",
        "Layer by layer (differences of the rows above, CPU µs per request; background = export threads):",
        "",
        "| layer | " + " | ".join(f"{fw} µs/req | {fw} of it background" for fw in args.frameworks) + " |",
        "|---|" + "---:|---:|" * len(args.frameworks),
    ]
    for label, config, base in layers:
        cells = []
        for fw in args.frameworks:
            if (fw, config) not in results or (fw, base) not in results:
                cells.append("- | -")
                continue
            delta = m(fw, config, "cpu_us") - m(fw, base, "cpu_us")
            background = m(fw, config, "background_us") - m(fw, base, "background_us")
            if config == "obskit_full@1000":  # growth over the 10-route overhead
                delta -= m(fw, "obskit_full", "cpu_us") - m(fw, "bare", "cpu_us")
                background -= m(fw, "obskit_full", "background_us") - m(fw, "bare", "background_us")
            cells.append(f"{delta:+.0f} | {background:+.0f}")
        report.append(f"| {label} | " + " | ".join(cells) + " |")
    encode_us, serialise_us = encode_cost()
    report += [
        "",
        f"OTLP span encoding (exporter.otlp.proto.common.encode_spans, 512 obskit-shaped spans): "
        f"{encode_us:.1f} µs/span building the protobuf objects, {serialise_us:.2f} µs/span serialising them.",
    ]
    for (framework, config), (sampled, cprof) in profiles.items():
        report += [
            "",
            f"### Profile: {framework}, {config}",
            "",
            analyse(
                sampled,
                cprof,
                args.cprofile_requests,
                m(framework, config, "request_thread_us"),
                m(framework, config, "background_us"),
                args.top,
            ),
        ]
    text = "\n".join(report)
    (args.out / "profile.md").write_text(text + "\n")
    (args.out / "profile.json").write_text(json.dumps({f"{fw}/{c}": v for (fw, c), v in results.items()}, indent=1))
    print()
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--framework", default="flask")
    parser.add_argument("--config", default="obskit_full")
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=int(env.get("PROFILE_REQUESTS", "1500")))
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=int(env.get("PROFILE_ROUNDS", "3")))
    parser.add_argument("--cprofile-requests", type=int, default=500)
    parser.add_argument("--pyspy-requests", type=int, default=5000)
    parser.add_argument("--frameworks", nargs="+", default=env.get("FRAMEWORKS", "flask fastapi").split())
    parser.add_argument("--configs", nargs="*", default=None)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--rate", type=int, default=2000, help="py-spy samples per second")
    parser.add_argument("--pin", type=int, default=int(env.get("PIN", "1" if (os.cpu_count() or 1) >= 2 else "0")))
    parser.add_argument("--out", type=Path, default=HERE / "results" / time.strftime("%Y%m%d-%H%M%S"))
    args = parser.parse_args(argv)
    return child(args) if args.child else parent(args)


if __name__ == "__main__":
    raise SystemExit(main())
