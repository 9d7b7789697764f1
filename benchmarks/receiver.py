"""The benchmark's telemetry sink, in a process of its own: obskit's OtlpReceiver plus a dummy Datadog agent.

- OTLP/gRPC (and HTTP) on ephemeral ports: ``obskit.testing.OtlpReceiver``, which decodes every export as a
  collector would. Decoded items are counted and then dropped, so memory stays flat over a long run.
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from obskit.testing import OtlpReceiver

_counts: Counter[str] = Counter()
_lock = threading.Lock()


def _on_receive(rx: OtlpReceiver, signal_name: str, items: list[Any]) -> None:
    servers = Counter(str(item.resource.get("bench.server", "")) for item in items)
    with _lock:
        for server, count in servers.items():
            _counts[f"{signal_name}@{server}"] += count
            _counts[f"{signal_name}_requests@{server}"] += 1
    rx.clear()  # count, then forget: a benchmark sends hundreds of thousands of spans


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
    parser.add_argument("--ports-file", required=True, help="where to write {grpc, http, agent, agents} as JSON")
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
    with OtlpReceiver(host="127.0.0.1") as rx:
        rx.on_receive = lambda signal_name, items: _on_receive(rx, signal_name, items)
        ports = {
            "grpc": rx.grpc_port,
            "http": rx.http_port,
            "agent": agents[0].server_address[1],
            "agents": [agent.server_address[1] for agent in agents],
        }
        with open(args.ports_file, "w") as f:
            json.dump(ports, f)
        stop.wait()
    for agent in agents:
        agent.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
