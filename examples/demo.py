"""The obskit demo: ``make demo`` (or ``python examples/demo.py --duration 20``).

Starts three things on 127.0.0.1 and stops them again after DURATION seconds or on Ctrl-C:

1. ``obskit tail``, a local OTLP receiver that prints trace trees, a RED table and log records;
2. ``examples/fastapi_app.py`` under uvicorn, exporting to it (short export intervals, so data shows up within a
   second or two; every 6th inference fails; inference takes a few milliseconds);
3. a traffic generator: predictions of various batch sizes, invalid inputs (422), unknown models (404), and
   streaming calls that take a few hundred milliseconds.

Nothing here is obskit-specific code: the app is configured only through ``OTEL_*`` variables, as in production.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
APP = "examples.fastapi_app:app"
IRIS_ROWS = ([5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 2.8, 4.3, 1.3], [4.9, 3.0, 1.4, 0.2])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check, what: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready within {timeout:g}s")
        time.sleep(0.05)  # readiness polling, bounded by the deadline


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def traffic(base_url: str, stop: threading.Event, sent: Counter[str]) -> None:
    """About ten requests a second until ``stop`` is set."""
    rng = random.Random(7)
    with httpx.Client(base_url=base_url, timeout=10) as client:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                if i % 10 == 0:  # streaming: 40 tokens, a few hundred milliseconds
                    response = client.get("/stream", params={"n": 40})
                elif i % 9 == 0:  # three features instead of four: 422
                    response = client.post("/predict", json={"instances": [[1.0, 2.0, 3.0]]})
                elif i % 13 == 0:
                    response = client.get("/models/unknown-model")  # 404
                elif i % 5 == 0:
                    response = client.get("/models/iris-centroid")
                else:
                    rows = [list(rng.choice(IRIS_ROWS)) for _ in range(rng.choice((1, 2, 4, 8, 32)))]
                    response = client.post("/predict", json={"instances": rows})
                sent[f"{response.request.method} {response.request.url.path} {response.status_code}"] += 1
            except httpx.HTTPError as exc:
                sent[f"failed: {type(exc).__name__}"] += 1
            stop.wait(0.08)


def stop_process(process: subprocess.Popen[bytes], sig: int, timeout: float = 15.0) -> int:
    """Send ``sig`` to our own child and wait; kill it if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to run; 0 (default) until Ctrl-C")
    args = parser.parse_args(argv)
    # Ctrl-C must stop the demo even if it was started with SIGINT ignored (as a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    grpc_port, http_port, app_port = free_port(), free_port(), free_port()
    app_url = f"http://127.0.0.1:{app_port}"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBSKIT_"))}
    app_env = {
        **base_env,
        "PYTHONPATH": str(ROOT),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{grpc_port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_BLRP_SCHEDULE_DELAY": "200",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "IRIS_FAIL_EVERY": "6",
        "IRIS_INFERENCE_DELAY": "0.003",
    }
    tail_cmd = [sys.executable, "-m", "obskit", "tail", "--grpc-port", str(grpc_port), "--http-port", str(http_port)]
    tail_cmd += ["--grace", "1", "--table-interval", "4", "--window", "30"]
    if args.duration:  # a backstop in case this script is killed without cleaning up
        tail_cmd += ["--duration", str(args.duration + 60)]
    app_cmd = [sys.executable, "-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", str(app_port)]
    app_cmd += ["--log-level", "warning"]

    print(
        f"demo: {APP} on {app_url}, exporting to obskit tail on 127.0.0.1:{grpc_port}; traffic for "
        f"{f'{args.duration:g}s' if args.duration else 'ever'} (Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    app_log = tempfile.NamedTemporaryFile(prefix="obskit-demo-app-", suffix=".log", delete=False)  # noqa: SIM115
    stop = threading.Event()
    sent: Counter[str] = Counter()
    # Own sessions: Ctrl-C reaches only this script, which then stops the children in order (traffic, app and
    # its final flush, then tail with its final table).
    tail = subprocess.Popen(tail_cmd, cwd=ROOT, env=base_env, start_new_session=True)
    app: subprocess.Popen[bytes] | None = None
    generator: threading.Thread | None = None
    status = 0
    try:
        wait_until(lambda: listening(grpc_port), "obskit tail", 30, tail)
        app = subprocess.Popen(
            app_cmd, cwd=ROOT, env=app_env, stdout=app_log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_until(lambda: answers(app_url + "/healthz"), "the example app", 60, app)
        generator = threading.Thread(target=traffic, args=(app_url, stop, sent), name="demo-traffic", daemon=True)
        generator.start()
        stop.wait(args.duration or None)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError) as exc:
        print(f"demo: {exc}\n--- app log ({app_log.name}) ---", file=sys.stderr)
        sys.stderr.write(Path(app_log.name).read_text(errors="replace"))
        status = 1
    finally:
        stop.set()
        with contextlib.suppress(KeyboardInterrupt):
            if generator is not None:
                generator.join(15)
            if app is not None:
                # Ctrl-C, as a developer would: uvicorn shuts down gracefully and obskit's exit-time flush
                # sends the last spans and metric points to tail.
                stop_process(app, signal.SIGINT)
            tail_status = stop_process(tail, signal.SIGINT)
            status = status or tail_status
        for process in (app, tail):  # a second Ctrl-C skipped the orderly stop
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(5)
        app_log.close()
    summary = ", ".join(f"{key} x{n}" for key, n in sorted(sent.items()))
    print(f"demo: sent {sum(sent.values())} requests ({summary}); app log: {app_log.name}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
