"""CPU cost of encoding spans into an OTLP request: the SDK's encoder against obskit's (``obskit._otlp_trace``).

Run: ``.venv/bin/python benchmarks/bench_encode.py [--rounds 9] [--batches 20]``

The batch is what a model server exports: 512 spans made as obskit makes them (its ``LeanTracerProvider``, its
``_LeanSpan`` class), i.e. 128 requests of one SERVER span (12 HTTP attributes in the order obskit's WSGI
middleware sets them at start, the client port varying per request, the status code set at the end) and three
INTERNAL stage spans whose attributes are the same read-only mapping on every call, as obskit's stage decorators
pass them (3 ``model.*`` attributes, plus ``model.batch_size`` on inference), from two instrumentation scopes
under one resource. Both encoders get the same batch, interleaved round by round (so drift, turbo and GC hit them
alike); the median microseconds per span over the rounds is reported. obskit's caches are warm after the first
batch, as in a long-running server. The two outputs are checked byte-identical.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections.abc import Callable, Sequence
from types import MappingProxyType

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from obskit._otlp_trace import encode_spans as obskit_encode_spans
from obskit._tracer import GuardedSpanProcessors, LeanTracerProvider

BATCH = 512
STAGES = ("preprocess", "inference", "postprocess")


def realistic_spans(count: int = BATCH) -> Sequence[ReadableSpan]:
    exporter = InMemorySpanExporter()
    resource = Resource.create(
        {
            "service.name": "fraud-scorer",
            "service.version": "2.4.1",
            "deployment.environment.name": "production",
            "host.name": "scorer-7d9f8b-x2kqp",
            "process.pid": 4242,
            "process.runtime.name": "cpython",
            "process.runtime.version": "3.11.9",
        }
    )
    provider = LeanTracerProvider(
        resource=resource, shutdown_on_exit=False, active_span_processor=GuardedSpanProcessors()
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    http = provider.get_tracer("obskit.instrumentation.wsgi", "1.0.0")
    stages = provider.get_tracer("obskit", "1.0.0")
    model = {"model.name": "fraud-xgb", "model.version": "3"}
    stage_attributes = {
        stage: MappingProxyType(
            {**model, "model.stage": stage, **({"model.batch_size": 32} if stage == "inference" else {})}
        )
        for stage in STAGES
    }
    rng = random.Random(7)
    for _ in range(count // (1 + len(STAGES))):
        attributes = {
            "http.request.method": "POST",
            "url.scheme": "http",
            "server.address": "scorer.internal:8080",
            "server.port": 8080,
            "url.path": "/v1/models/fraud-xgb:predict",
            "client.address": "10.0.7.22",
            "client.port": rng.randrange(32768, 61000),
            "user_agent.original": "python-requests/2.32.3",
            "network.protocol.version": "1.1",
            "http.route": "/v1/models/<name>:predict",
            "url.query": "explain=false",
        }
        server = http.start_span("POST /v1/models/<name>:predict", kind=trace.SpanKind.SERVER, attributes=attributes)
        with trace.use_span(server, end_on_exit=False):
            for stage in STAGES:
                stages.start_span(f"{stage} fraud-xgb", attributes=stage_attributes[stage]).end()
        server.set_attribute("http.response.status_code", 200)
        server.end()
    spans = exporter.get_finished_spans()
    if len(spans) != count or type(spans[0]).__name__ != "_LeanSpan":
        raise SystemExit("the batch is not made of obskit's lean spans")
    return spans


def _sdk(spans: Sequence[ReadableSpan]) -> bytes:
    return sdk_encode_spans(spans).SerializeToString()


def time_per_span(encode: Callable[[Sequence[ReadableSpan]], bytes], spans: Sequence[ReadableSpan], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        encode(spans)
    return (time.perf_counter() - start) / (n * len(spans)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batches", type=int, default=20, help="batches of 512 spans encoded per round and case")
    args = parser.parse_args()

    spans = realistic_spans()
    if _sdk(spans) != obskit_encode_spans(spans):
        raise SystemExit("the encoders disagree: fix obskit._otlp_trace before timing it")
    cases: dict[str, Callable[[Sequence[ReadableSpan]], bytes]] = {"sdk": _sdk, "obskit": obskit_encode_spans}
    results: dict[str, list[float]] = {name: [] for name in cases}
    gc.collect()
    for _ in range(args.rounds):
        for name, encode in cases.items():
            results[name].append(time_per_span(encode, spans, args.batches))
    sdk_us, obskit_us = (statistics.median(results[name]) for name in cases)
    print(f"{len(spans)} spans per batch, median of {args.rounds} interleaved rounds of {args.batches} batches")
    print(f"sdk encode_spans().SerializeToString()  {sdk_us:7.2f} µs/span")
    print(f"obskit._otlp_trace.encode_spans()        {obskit_us:7.2f} µs/span")
    print(f"ratio                                    {sdk_us / obskit_us:7.1f}x")


if __name__ == "__main__":
    main()
