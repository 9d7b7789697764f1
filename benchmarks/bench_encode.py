"""CPU cost of encoding spans into an OTLP request: the SDK's encoder against obskit's (``obskit._otlp_trace``).

Run: ``.venv/bin/python benchmarks/bench_encode.py [--rounds 9] [--batches 20]``

The batch is what a model server exports: 512 real SDK spans, i.e. 128 requests of one server span (10 HTTP
attributes, one of which, the client port, varies) and three child stage spans (3-4 ``model.*`` attributes),
from two instrumentation scopes under one resource. Both encoders get the same batch, interleaved round by round
(so drift, turbo and GC hit them alike); the median microseconds per span over the rounds is reported. obskit's
caches are warm after the first batch, as in a long-running server. The two outputs are checked byte-identical.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections.abc import Callable, Sequence

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from obskit._otlp_trace import encode_spans as obskit_encode_spans

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
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    http = provider.get_tracer("opentelemetry.instrumentation.flask", "0.66b1")
    stages = provider.get_tracer("obskit", "1.0.0")
    rng = random.Random(7)
    for _ in range(count // (1 + len(STAGES))):
        attributes = {
            "http.request.method": "POST",
            "url.scheme": "http",
            "url.path": "/v1/models/fraud-xgb:predict",
            "http.route": "/v1/models/<name>:predict",
            "server.address": "10.0.3.17",
            "server.port": 8080,
            "network.protocol.version": "1.1",
            "user_agent.original": "python-requests/2.32.3",
            "client.address": "10.0.7.22",
            "client.port": rng.randrange(32768, 61000),
        }
        with http.start_as_current_span("POST /v1/models/<name>:predict", kind=trace.SpanKind.SERVER) as server:
            server.set_attributes(attributes)
            for stage in STAGES:
                with stages.start_as_current_span(f"{stage} fraud-xgb") as span:
                    span.set_attributes({"model.name": "fraud-xgb", "model.version": "3", "model.stage": stage})
                    if stage == "inference":
                        span.set_attribute("model.batch_size", 32)
            server.set_attribute("http.response.status_code", 200)
    return exporter.get_finished_spans()


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
