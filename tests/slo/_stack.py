"""Real processes for the SLO end-to-end tests: uvicorn services with a Prometheus pull endpoint, a Prometheus
server scraping them every second, and traffic. Everything listens on 127.0.0.1 and is stopped by its own PID."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PROMETHEUS = "/usr/bin/prometheus"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], what: str, timeout: float, log: Callable[[], str] = str) -> Any:
    """Poll ``condition`` until it returns something truthy; TimeoutError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except (OSError, httpx.TransportError, ValueError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout}s\n{log()}")
        time.sleep(0.2)  # poll interval while waiting on a condition, with a deadline


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return f"--- {self.name} log ---\n" + self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """SIGTERM our own process group (the child and anything it forked), then SIGKILL if it lingers."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)


def start(name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path) -> Process:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            list(argv), cwd=ROOT, env=dict(env), stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Process(name, popen, log_path)


@dataclass
class Service:
    """examples/fastapi_app.py under uvicorn, metrics on its own pull endpoint."""

    job: str
    port: int
    metrics_port: int
    process: Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_service(job: str, log_dir: Path, **faults: str) -> Service:
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBSKIT_", "IRIS_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        OTEL_METRICS_EXPORTER="prometheus",
        OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
        OTEL_EXPORTER_PROMETHEUS_PORT=str(metrics_port),
        OTEL_METRIC_EXPORT_INTERVAL="1000",
        OTEL_TRACES_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        **faults,
    )
    argv = [str(BIN / "uvicorn"), "examples.fastapi_app:app", "--host", "127.0.0.1", "--port", str(port)]
    process = start(job, [*argv, "--log-level", "warning"], env, log_dir)
    return Service(job, port, metrics_port, process)


@dataclass
class Traffic:
    """Background clients sending /predict (plus a GET route and a streaming one) until stopped."""

    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def drive(self, service: Service, clients: int = 1, pause: float = 0.01) -> None:
        for _ in range(clients):
            thread = threading.Thread(target=self._loop, args=(service.url, pause), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _loop(self, url: str, pause: float) -> None:
        body = {"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}
        with httpx.Client(base_url=url, timeout=10) as client:
            n = 0
            while not self.stop_event.is_set():
                n += 1
                try:
                    client.post("/predict", json=body)
                    if n % 10 == 0:
                        client.get("/models/iris-centroid")
                        client.get("/stream", params={"n": 2})
                except httpx.HTTPError:
                    pass
                self.stop_event.wait(pause)  # pacing, so three services share the CPU

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(15)


class Prometheus:
    """A real Prometheus (Debian's package) scraping ``services`` every second, evaluating ``rule_files``."""

    def __init__(
        self,
        services: Sequence[Service],
        rule_files: Sequence[Path],
        workdir: Path,
        scrape_configs: Sequence[dict[str, Any]] = (),
    ) -> None:
        if not shutil.which(PROMETHEUS) and not Path(PROMETHEUS).exists():
            pytest.fail(
                "prometheus not found: install Debian's prometheus package (bash scripts/install-system-deps.sh)"
            )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": s.job, "static_configs": [{"targets": [f"127.0.0.1:{s.metrics_port}"]}]} for s in services
            ]
            + list(scrape_configs),
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        argv = [
            PROMETHEUS,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
        ]
        self.process = start("prometheus", argv, os.environ, workdir)

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            if self.process.popen.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.popen.returncode}\n{self.process.log()}")
            return httpx.get(self.url + "/-/ready", timeout=1).status_code == 200

        wait_for(ready, "prometheus /-/ready", timeout, self.process.log)

    def api(self, path: str, **params: str) -> Any:
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        with urllib.request.urlopen(self.url + path + query, timeout=10) as response:
            payload = json.load(response)
        assert payload["status"] == "success", payload
        return payload["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        data = self.api("/api/v1/query", query=expr)
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(item["metric"], float(item["value"][1])) for item in data["result"]]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return result[0][1] if result else None
