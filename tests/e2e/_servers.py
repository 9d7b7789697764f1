"""Real uvicorn/gunicorn processes on 127.0.0.1 for the end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def telemetry_env(receiver_endpoint: str, protocol: str = "grpc", **extra: str) -> dict[str, str]:
    """Short export intervals so a test sees data within a second, without sleeping."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
    }
    env.update(extra)
    return env


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM the server (its own PID) and wait for it to exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise


@contextmanager
def serve(
    argv: Sequence[str],
    port: int,
    env: Mapping[str, str],
    *,
    ready_path: str = "/healthz",
    timeout: float = 30.0,
) -> Iterator[Server]:
    """Start ``argv`` (a server listening on 127.0.0.1:port), wait until it answers, stop it afterwards."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBSKIT_"))}
    full_env.update(env)
    full_env["PYTHONPATH"] = str(ROOT)
    log_file = tempfile.NamedTemporaryFile(prefix="obskit-server-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        list(argv), cwd=ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = Server(process, f"http://127.0.0.1:{port}", Path(log_file.name))
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
            try:
                if httpx.get(server.url + ready_path, timeout=1).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not ready within {timeout}s:\n{server.log()}")
            time.sleep(0.05)  # readiness poll interval, not synchronisation on telemetry
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        log_file.close()


def uvicorn(app: str, port: int, *extra: str) -> list[str]:
    return [str(BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *extra]


def gunicorn(app: str, port: int, *extra: str) -> list[str]:
    return [str(BIN / "gunicorn"), app, "--bind", f"127.0.0.1:{port}", "--log-level", "warning", *extra]
