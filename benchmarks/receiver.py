"""The benchmark's telemetry sink, in a process of its own: an OTLP/gRPC receiver plus a dummy Datadog agent.

- OTLP/gRPC on an ephemeral port: every export request is parsed (the protobuf runtime's C parser) and its items
  counted, then dropped, so memory stays flat over a long run. Not ``obskit.testing.OtlpReceiver``: that one
  turns every span into Python objects, 74-90 µs of CPU per request of obskit full (four spans; session 12), and
  the receiver shares CPU 0 with wrk. It slowed the load generator while the server waited: req/s read 3-5%
  below what the server's CPU allowed, for the exporting variants only. A collector does this work on another
  machine.
- A dummy Datadog trace agent (HTTP): answers ``/info`` and accepts every ``/v0.x/traces`` payload with the
  agent's usual ``rate_by_service`` reply, so ddtrace does all its tracing, encoding and sending work.
- ``GET /stats`` on the agent's port: JSON counters (spans, metric points, logs, export requests, ddtrace
  payloads and traces), read by bench_http.py before and after each server to check what was exported.
- Counted per server, as ``<counter>@<server id>``, for servers that run side by side: OTLP items by their
  ``bench.server`` resource attribute (bench_http.py sets it through OTEL_RESOURCE_ATTRIBUTES), ddtrace payloads by
  which of the ``--agents`` dummy agents got them (agent *i* counts for server id *i*; the first also serves
  ``/stats``). Items without the attribute count under the empty id.

Run: ``python benchmarks/receiver.py --ports-file ports.json [--agents N]`` (stops on SIGTERM/SIGINT).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections import Counter
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_counts: Counter[str] = Counter()
_lock = threading.Lock()


def _server_id(resource: Any) -> str:
    for attribute in resource.attributes:
        if attribute.key == "bench.server":
            return str(attribute.value.string_value)
    return ""


def _spans(resource_spans: Any) -> int:
    return sum(len(scope.spans) for scope in resource_spans.scope_spans)


def _points(resource_metrics: Any) -> int:
    return sum(
        len(getattr(metric, kind).data_points)
        for scope in resource_metrics.scope_metrics
        for metric in scope.metrics
        if (kind := metric.WhichOneof("data"))
    )


def _logs(resource_logs: Any) -> int:
    return sum(len(scope.log_records) for scope in resource_logs.scope_logs)


def _count(signal_name: str, groups: Any, items_of: Any) -> bytes:
    """Count a request's items per server id; the reply is an empty Export*ServiceResponse (no partial success)."""
    counted: Counter[str] = Counter()
    for group in groups:
        counted[_server_id(group.resource)] += items_of(group)
    with _lock:
        for server, items in counted.items():
            _counts[f"{signal_name}@{server}"] += items
            _counts[f"{signal_name}_requests@{server}"] += 1
    return b""


_SERVICES = {
    "opentelemetry.proto.collector.trace.v1.TraceService": (
        ExportTraceServiceRequest,
        lambda request, _context: _count("traces", request.resource_spans, _spans),
    ),
    "opentelemetry.proto.collector.metrics.v1.MetricsService": (
        ExportMetricsServiceRequest,
        lambda request, _context: _count("metrics", request.resource_metrics, _points),
    ),
    "opentelemetry.proto.collector.logs.v1.LogsService": (
        ExportLogsServiceRequest,
        lambda request, _context: _count("logs", request.resource_logs, _logs),
    ),
}


def _grpc_server() -> tuple[Any, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=[("grpc.so_reuseport", 0)])
    for service, (request_class, handle) in _SERVICES.items():
        handler = grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=request_class.FromString, response_serializer=bytes
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {"Export": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


class _AgentHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_id = ""  # set per agent (a subclass each)

    def log_message(self, format: str, *args: Any) -> None:  # silence per-request logging
        pass

    def _reply(self, body: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drain(self) -> int:
        length = int(self.headers.get("Content-Length") or 0)
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                break
            remaining -= len(chunk)
        return length

    def do_GET(self) -> None:
        if self.path == "/stats":
            with _lock:
                stats = dict(_counts)
            self._reply(stats)
        elif self.path == "/info":
            # What a recent agent advertises; no client-side stats, so the tracer sends every trace.
            endpoints = ["/v0.4/traces", "/v0.5/traces", "/debugger/v1/input", "/debugger/v1/diagnostics"]
            self._reply({"version": "7.60.0", "endpoints": endpoints, "client_drop_p0s": False})
        else:
            self._reply({})

    def do_PUT(self) -> None:
        size = self._drain()
        if "/traces" in self.path:
            at = f"@{self.server_id}"
            with _lock:
                _counts["dd_payloads" + at] += 1
                _counts["dd_traces" + at] += int(self.headers.get("X-Datadog-Trace-Count") or 0)
                _counts["dd_bytes" + at] += size
            self._reply({"rate_by_service": {"service:,env:": 1.0}})
        else:  # telemetry, stats, remote config: accepted and ignored
            self._reply({})

    do_POST = do_PUT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports-file", required=True, help="where to write {grpc, agent, agents} as JSON")
    parser.add_argument("--agents", type=int, default=1, help="dummy Datadog agents, one per server id 0..N-1")
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    agents = []
    for i in range(max(1, args.agents)):
        handler = type(f"Agent{i}", (_AgentHandler,), {"server_id": str(i)})
        agent = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        agent.daemon_threads = True
        threading.Thread(target=agent.serve_forever, name=f"dummy-agent-{i}", daemon=True).start()
        agents.append(agent)
    server, grpc_port = _grpc_server()
    ports = {
        "grpc": grpc_port,
        "agent": agents[0].server_address[1],
        "agents": [agent.server_address[1] for agent in agents],
    }
    with open(args.ports_file, "w") as f:
        json.dump(ports, f)
    stop.wait()
    server.stop(None)
    for agent in agents:
        agent.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
