"""Per-call overhead of an obskit stage decorator, side by side with stock OpenTelemetry and prometheus_client.

Run: ``.venv/bin/python benchmarks/bench_stage.py [--rounds 7] [--calls 20000]``

Every case calls the same trivial function; cases are interleaved round by round (so drift, turbo and
GC hit them alike) and the median nanoseconds per call over the rounds is reported. All traced cases
run under one parent span, so their spans are children, as in a request handler. The pipelines are the
production ones minus the network. Stock OpenTelemetry: a BatchSpanProcessor whose exporter returns SUCCESS
without encoding. obskit: what ``init()`` builds, its accounted batch processor feeding its export buffer,
whose thread encodes every span into an OTLP request and hands it to a sender that discards it (so obskit's
rows also carry the OTLP encoding, on another thread but under the same GIL). Both: a MeterProvider with an
InMemoryMetricReader (no collection during the timed loops).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from obskit import _producer, _semconv, _stages

MODEL = "fraud-xgb"
ATTRS = {"model.name": MODEL, "model.version": "3", "model.stage": "inference"}


class NullExporter(SpanExporter):
    """Accepts every batch and does nothing: the cost of the pipeline without the network."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class NullSender:
    """obskit's export buffer's transport, accepting every request: the buffer thread's work minus the network."""

    timeout = 10.0

    def send(self, payload: bytes, timeout: float) -> Any:
        from obskit._buffer import SendResult

        return SendResult.success()

    def describe(self) -> str:
        return "null"

    def close(self) -> None:
        pass

    def reset_after_fork(self) -> None:
        pass


def sdk_tracer_provider() -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(NullExporter()))
    return provider


def predict(x: int) -> int:
    return x


@wrapt.decorator
def noop(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return wrapped(*args, **kwargs)


Cases = dict[str, tuple[Callable[[int], int], Callable[[], None]]]


def obskit_tracer_provider() -> TracerProvider:
    """The tracer provider obskit.init() builds (lean spans, guarded processors, redaction), exporting nowhere."""
    from opentelemetry.sdk.trace.sampling import DEFAULT_ON

    try:
        from obskit._setup import make_tracer_provider
    except ImportError:  # an obskit snapshot from before the lean span path
        return sdk_tracer_provider()
    provider = make_tracer_provider(Resource.get_empty(), DEFAULT_ON, capture_query=False)
    try:
        from obskit._buffer import AccountedBatchSpanProcessor, BufferedSpanExporter, ExportBuffer
    except ImportError:  # an obskit snapshot from before the export buffer
        provider.add_span_processor(BatchSpanProcessor(NullExporter()))
        return provider
    buffer = ExportBuffer({"spans": NullSender()}, max_bytes=64 * 1024 * 1024)
    provider.add_span_processor(AccountedBatchSpanProcessor(BufferedSpanExporter(buffer)))
    provider.obskit_buffer = buffer  # type: ignore[attr-defined]  # shut down with the provider, below
    return provider


def stage_spans_factory() -> Any:
    """What init() passes to the stage binding for cheaper stage spans (None in snapshots without them)."""
    try:
        from obskit._stagespan import stage_spans
    except ImportError:
        return None
    return stage_spans


def build_cases() -> tuple[Cases, list[Any], trace.Tracer]:
    """Each case: (function to call, setup run before its timed loop); also what to shut down, a parent tracer."""
    obskit_tp = obskit_tracer_provider()
    obskit_reader = InMemoryMetricReader()
    _producer.attach(obskit_reader, _stages.current_registry, Resource.get_empty())  # as init() does
    obskit_mp = MeterProvider(metric_readers=[obskit_reader])
    stock_tp = sdk_tracer_provider()
    stock_mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    closables: list[Any] = [obskit_tp, obskit_mp, stock_tp, stock_mp]
    buffer = getattr(obskit_tp, "obskit_buffer", None)
    if buffer is not None:  # after the provider, which hands its last spans to it
        closables.append(SimpleNamespace(shutdown=lambda: buffer.shutdown(5.0)))

    obskit_predict = _stages.inference(model=MODEL, version="3")(predict)
    obskit_tracer = obskit_tp.get_tracer("obskit")
    obskit_meter = obskit_mp.get_meter("obskit")

    def unbound() -> None:
        _stages.unbind()

    def metrics_only() -> None:
        _stages.bind(obskit_tracer, obskit_meter, model_name=None, model_version=None, traces_enabled=False)

    factory = stage_spans_factory()
    fast = {} if factory is None else {"stage_spans": factory}

    def full() -> None:
        _stages.bind(obskit_tracer, obskit_meter, model_name=None, model_version=None, **fast)

    def nothing() -> None:
        pass

    stock_tracer = stock_tp.get_tracer("bench")
    stock_hist = stock_mp.get_meter("bench").create_histogram(
        _semconv.MODEL_DURATION, unit="s", explicit_bucket_boundaries_advisory=_semconv.MODEL_DURATION_BUCKETS
    )
    span_name = f"inference {MODEL}"
    perf_counter = time.perf_counter

    def stock_span(x: int) -> int:
        with stock_tracer.start_as_current_span(span_name, attributes=ATTRS):
            return predict(x)

    def stock_span_histogram(x: int) -> int:
        start = perf_counter()
        with stock_tracer.start_as_current_span(span_name, attributes=ATTRS):
            result = predict(x)
        stock_hist.record(perf_counter() - start, ATTRS)
        return result

    # The same SDK calls obskit makes, written out by hand: what is left is the decorator's own cost.
    hand_tracer = stock_tp.get_tracer("bench.hand")
    hand_meter = stock_mp.get_meter("bench.hand")
    hand_hist = hand_meter.create_histogram(
        "hand.duration", unit="s", explicit_bucket_boundaries_advisory=_semconv.MODEL_DURATION_BUCKETS
    )
    hand_active = hand_meter.create_up_down_counter("hand.active", unit="{call}")
    perf_counter_ns = time.perf_counter_ns

    def hand_full(x: int) -> int:
        span = hand_tracer.start_span(span_name, None, trace.SpanKind.INTERNAL, ATTRS)
        ctx = trace.set_span_in_context(span)
        token = otel_context.attach(ctx)
        hand_active.add(1, ATTRS)
        start = perf_counter_ns()
        result = predict(x)
        elapsed = (perf_counter_ns() - start) / 1e9
        otel_context.detach(token)
        hand_hist.record(elapsed, ATTRS, context=ctx)
        hand_active.add(-1, ATTRS)
        span.end()
        return result

    def hand_metrics(x: int) -> int:
        hand_active.add(1, ATTRS)
        start = perf_counter_ns()
        result = predict(x)
        hand_hist.record((perf_counter_ns() - start) / 1e9, ATTRS)
        hand_active.add(-1, ATTRS)
        return result

    def active_only(x: int) -> int:
        hand_active.add(1, ATTRS)
        result = predict(x)
        hand_active.add(-1, ATTRS)
        return result

    cases: Cases = {
        "bare function": (predict, nothing),
        "wrapt no-op decorator": (noop(predict), nothing),
        "obskit disabled (unbound)": (obskit_predict, unbound),
        "obskit metrics-only": (obskit_predict, metrics_only),
        "obskit full (span + metrics)": (obskit_predict, full),
        "stock OTel span": (stock_span, nothing),
        "stock OTel span + histogram": (stock_span_histogram, nothing),
        "hand-written obskit full": (hand_full, nothing),
        "hand-written obskit metrics-only": (hand_metrics, nothing),
        "SDK up-down counter add(+1), add(-1)": (active_only, nothing),
    }

    try:
        from obskit._guard import GuardedMeterProvider
    except ImportError:
        pass
    else:
        guarded_meter = GuardedMeterProvider(obskit_mp).get_meter("obskit")

        def full_guarded() -> None:
            _stages.bind(obskit_tracer, guarded_meter, model_name=None, model_version=None)

        cases["obskit full, guarded meter"] = (obskit_predict, full_guarded)

    try:
        import prometheus_client
    except ImportError:
        print("prometheus_client not importable: its rows are skipped", file=sys.stderr)
    else:
        registry = prometheus_client.CollectorRegistry()
        labels = ("model_name", "model_version", "model_stage")
        prom_hist = prometheus_client.Histogram(
            "bench_model_duration_seconds", "d", labels, registry=registry, buckets=_semconv.MODEL_DURATION_BUCKETS
        )
        prom_calls = prometheus_client.Counter("bench_model_calls", "c", labels, registry=registry)
        values = (MODEL, "3", "inference")
        hist_child, calls_child = prom_hist.labels(*values), prom_calls.labels(*values)

        def prometheus_cached(x: int) -> int:
            start = perf_counter()
            result = predict(x)
            hist_child.observe(perf_counter() - start)
            calls_child.inc()
            return result

        def prometheus_labels(x: int) -> int:
            start = perf_counter()
            result = predict(x)
            prom_hist.labels(*values).observe(perf_counter() - start)
            prom_calls.labels(*values).inc()
            return result

        cases["prometheus histogram + counter"] = (prometheus_cached, nothing)
        cases["prometheus .labels() per call"] = (prometheus_labels, nothing)
    return cases, closables, stock_tp.get_tracer("bench.parent")


def time_case(func: Callable[[int], int], calls: int) -> float:
    """Nanoseconds per call of ``func`` over ``calls`` calls (loop overhead included, as in 'bare function')."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in range(calls):
            func(1)
        return (time.perf_counter_ns() - start) / calls
    finally:
        if gc_was_enabled:
            gc.enable()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median reported)")
    parser.add_argument("--calls", type=int, default=20_000, help="calls per case per round")
    args = parser.parse_args(argv)

    cases, closables, parent_tracer = build_cases()
    # A real (SDK) parent: every traced case creates a child span, as inside a request.
    parent = parent_tracer.start_span("POST /predict")
    token = otel_context.attach(trace.set_span_in_context(parent))
    results: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for func, setup in cases.values():  # warm-up: caches, first-seen attribute sets, the SDK's lazy init
            setup()
            time_case(func, 2_000)
        for _ in range(args.rounds):
            for name, (func, setup) in cases.items():
                setup()
                results[name].append(time_case(func, args.calls))
    finally:
        _stages.unbind()
        otel_context.detach(token)
        parent.end()
        for closable in closables:
            closable.shutdown()

    median = {name: statistics.median(samples) for name, samples in results.items()}
    bare = median["bare function"]
    print(f"Python {sys.version.split()[0]}, {args.rounds} interleaved rounds x {args.calls} calls, median ns/call")
    # The minimum is shown too: on a busy machine it is the steadier of the two.
    print(f"{'case':<38} {'median':>9} {'min':>9} {'median - bare':>14}")
    for name, ns in median.items():
        print(f"{name:<38} {ns:>9.0f} {min(results[name]):>9.0f} {ns - bare:>14.0f}")

    print("\nIssue targets (ratios of ns/call):")
    targets = [
        ("full / stock span+histogram", "obskit full (span + metrics)", "stock OTel span + histogram", 0.25),
        ("metrics-only / prometheus", "obskit metrics-only", "prometheus histogram + counter", 1.0),
        ("disabled / wrapt no-op", "obskit disabled (unbound)", "wrapt no-op decorator", 2.0),
    ]
    for label, num, den, target in targets:
        if num in median and den in median:
            ratio = median[num] / median[den]
            verdict = "ok" if ratio <= target else "MISSED"
            print(f"  {label:<30} {ratio:6.2f}  (target <= {target:g}) {verdict}")
    # The decorator's own cost, net of the SDK calls it makes.
    for mode in ("full", "metrics-only"):
        own = median[f"obskit {mode}" + (" (span + metrics)" if mode == "full" else "")]
        own -= median[f"hand-written obskit {mode}"]
        print(f"  obskit {mode} minus the same SDK calls by hand: {own:+.0f} ns/call")
    share = median["SDK up-down counter add(+1), add(-1)"] - bare
    print(f"  obskit.model.active's two add() calls: {share:.0f} ns/call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
