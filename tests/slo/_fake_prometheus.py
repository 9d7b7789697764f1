"""A tiny stand-in for the Prometheus query API, for the gate's verdict logic. The real one is in test_e2e."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, Any]  # HTTP status and JSON body


def vector(*values: float | str, labels: dict[str, str] | None = None) -> Answer:
    result = [{"metric": labels or {}, "value": [1700000000.0, str(v)]} for v in values]
    return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}


@contextmanager
def fake_prometheus(
    answer: Callable[[str], Answer],
    *,
    prefix: str = "",
    requests: list[tuple[str, str | None]] | None = None,
    redirect: bool = False,
) -> Iterator[tuple[str, list[str]]]:
    """Serve <prefix>/api/v1/query on 127.0.0.1:<free port>; yields the base URL and the list of queries received.

    ``requests``, if given, receives each request's path (with its query string) and Authorization header.
    ``redirect``: the answer's body is headers (``{"Location": ...}``) for a bodiless 3xx response.
    """
    queries: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            query = form["query"][0]
            queries.append(query)
            if requests is not None:
                requests.append((self.path, self.headers.get("Authorization")))
            path = urllib.parse.urlsplit(self.path).path
            status, body = answer(query) if path == f"{prefix}/api/v1/query" else (404, {"error": "not found"})
            if redirect:
                self.send_response(status)
                for name, value in body.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            payload = json.dumps(body).encode() if not isinstance(body, bytes) else body
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serving(Handler) as port:
        yield f"http://127.0.0.1:{port}", queries


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """Serve ``handler`` on 127.0.0.1 from a thread of its own; yields the port, and stops the server after."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
