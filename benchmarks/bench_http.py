"""HTTP overhead: interleaved rounds of every variant, each a fresh server process under wrk.

Run through ``bash benchmarks/run.sh`` (which builds benchmarks/.venv and installs wrk), or directly:
``benchmarks/.venv/bin/python benchmarks/bench_http.py --rounds 3 --duration 5 --out /tmp/bench``.

A round, per framework: start a fresh server of every (variant, routes) configuration (gunicorn sync with 1
worker for Flask, uvicorn for FastAPI), all pinned to CPU 1 and side by side; wait for /healthz and warm each up
with wrk; then the servers take turns under ``wrk -t1 -c8`` POST /predict (pinned to CPU 0, with the receiver)
in slices of SLICE seconds, DURATION seconds per server in all, in a fresh random order every turn. So each
variant is measured within seconds of the bare server, many times over: this VM's speed drifts by 10-20% over a
minute, and when each variant ran once for DURATION seconds, minutes away from its bare pair, single rounds of
the same code read 0.51x to 0.95x (session 12: 0.67x to 0.73x with slices). Server CPU is read from
/proc/<pid>/stat (utime + stime of the server and its worker processes) around every slice. The servers get
SIGTERM (uvicorn SIGINT), flush, and what the receiver got from each is counted (it tells them apart by a
``bench.server`` resource attribute and, for ddtrace, by a dummy agent each): spans per request, a check that
the telemetry really left the process. Ratios are paired: requests/s of a variant (its slices' requests over
their time) over the bare server's in the same round and framework; the medians over the rounds are reported.

A/B mode: ``--baseline-src DIR`` (or OBSKIT_BASELINE_SRC; run.sh sets it from OBSKIT_BASELINE_REF) adds every
selected obskit variant a second time as ``<variant>@base``, served from that obskit source, in the same rounds.
The A/B table then gives the per-round difference of server CPU per request (and of 1/req·s) between the two,
paired round by round: on a noisy VM, where a round's absolute figures move by 10-20%, this is the figure that
tells whether a change helped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
# The obskit source measured: run.sh points this at a snapshot taken when the run starts, so commits landing
# during a 15-minute run cannot change the code under test half-way through.
SRC = Path(os.environ.get("OBSKIT_SRC") or ROOT / "src")
BASE = "@base"  # the suffix of a variant served from the baseline source (A/B mode)
CLK_TCK = os.sysconf("SC_CLK_TCK")
VARIANTS = ("bare", "otel", "ddtrace", "prometheus", "obskit_full", "obskit_metrics", "obskit_disabled")
LABELS = {
    "bare": "bare (no instrumentation)",
    "otel": "stock OpenTelemetry (contrib + 3 spans + 3 histograms, OTLP/gRPC)",
    "ddtrace": "ddtrace (ddtrace-run + 3 spans, dummy agent)",
    "prometheus": "prometheus (exporter/instrumentator + 3 stage histograms)",
    "obskit_full": "obskit full (server + 3 stage spans, RED + stage metrics, OTLP/gRPC)",
    "obskit_metrics": "obskit metrics-only (OTEL_TRACES_EXPORTER=none)",
    "obskit_disabled": "obskit disabled (OTEL_SDK_DISABLED=true)",
}
FRAMEWORKS = ("flask", "fastapi")
ROUTE_VARIANTS = ("bare", "obskit_full")  # the routes-scaling run: overhead of obskit full at 10 vs 1,000 routes
BODY = '{"instances": [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]}'
LUA = """
wrk.method = "POST"
wrk.body = '__BODY__'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
""".replace("__BODY__", BODY)


@dataclass(frozen=True)
class Config:
    framework: str
    variant: str
    routes: int

    @property
    def key(self) -> str:
        return f"{self.framework}/{self.variant}/{self.routes}"


@dataclass
class Sample:
    framework: str
    variant: str
    routes: int
    round: int
    rps: float
    requests: int
    errors: int
    p50_us: float
    p99_us: float
    cpu_us_per_request: float
    receiver_cpu_us_per_request: float
    total_requests: int
    exported: dict[str, int] = field(default_factory=dict)
    log: str = ""


# ---------------------------------------------------------------------------------------------------------------
# processes


# Issue #8's HTTP targets: (framework, variant, least paired ratio to bare, by req/s and by CPU alike).
TARGETS: list[tuple[str, str, float]] = [
    ("flask", "obskit_full", 0.75),
    ("fastapi", "obskit_full", 0.70),
    ("flask", "obskit_metrics", 0.95),
    ("fastapi", "obskit_metrics", 0.90),
]


def target_met(ratio: float, cpu_ratio: float, target: float) -> bool:
    """A target is met when the req/s ratio and the CPU ratio both reach it."""
    return min(ratio, cpu_ratio) >= target


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` and all its live descendants, in clock ticks."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                children = [int(c) for c in (task / "children").read_text().split()]
                found += children
                stack += children
    return found


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBSKIT_", "DD_", "VARIANT", "ROUTES"))}


def pin(cpu: str | None) -> list[str]:
    return ["taskset", "-c", cpu] if cpu is not None else []


def server_command(cfg: Config, port: int, cpu: str | None) -> list[str]:
    prefix = pin(cpu) + ([str(BIN / "ddtrace-run")] if cfg.variant == "ddtrace" else [])
    if cfg.framework == "flask":
        # Sync worker, 1 worker: one request at a time, connection closed after each response. wrk's 8
        # connections queue in the listen backlog, so the load is closed-loop and requests/s = 1 / service time.
        app = ["-w", "1", "-k", "sync", "--bind", f"127.0.0.1:{port}", "--log-level", "warning", "app_flask:app"]
        return [*prefix, str(BIN / "gunicorn"), *app]
    return [
        *prefix,
        str(BIN / "uvicorn"),
        "app_fastapi:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]


def app_env(variant: str, ports: dict[str, int], src: Path = SRC) -> dict[str, str]:
    """The environment of a benchmark app process of ``variant`` importing obskit from ``src``."""
    env = clean_env()
    env.update(
        VARIANT=variant,
        OBSKIT_SRC=str(src),
        PYTHONPATH=os.pathsep.join([str(HERE), str(src)]),
        OTLP_ENDPOINT=f"127.0.0.1:{ports['grpc']}",
        PYTHONDONTWRITEBYTECODE="1",
    )
    if variant.startswith("obskit"):
        env.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{ports['grpc']}",
            OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
            OTEL_TRACES_SAMPLER="always_on",  # 100% sampling: sampled-out spans don't count (issue 8)
        )
    return env


def server_env(cfg: Config, ports: dict[str, int], baseline_src: Path | None = None) -> dict[str, str]:
    variant, base = base_variant(cfg.variant)
    env = app_env(variant, ports, baseline_src if base and baseline_src is not None else SRC)
    env["ROUTES"] = str(cfg.routes)
    if variant.startswith("obskit"):
        if variant == "obskit_metrics":
            env["OTEL_TRACES_EXPORTER"] = "none"
        elif variant == "obskit_disabled":
            env["OTEL_SDK_DISABLED"] = "true"
    elif variant == "ddtrace":
        env.update(
            DD_TRACE_AGENT_URL=f"http://127.0.0.1:{ports['agent']}",  # the dummy agent in receiver.py
            DD_SERVICE="bench-model-server",
            DD_ENV="bench",
            DD_TRACE_SAMPLING_RULES='[{"sample_rate": 1.0}]',  # every request traced and kept
            DD_INSTRUMENTATION_TELEMETRY_ENABLED="false",  # no background telemetry to a real intake
            DD_REMOTE_CONFIGURATION_ENABLED="false",
            DD_TRACE_STARTUP_LOGS="false",
        )
    return env


def base_variant(variant: str) -> tuple[str, bool]:
    """The app's VARIANT of a configured variant, and whether it is served from the baseline source."""
    return (variant[: -len(BASE)], True) if variant.endswith(BASE) else (variant, False)


def label(variant: str) -> str:
    name, base = base_variant(variant)
    return LABELS[name] + (", baseline source" if base else "")


@contextlib.contextmanager
def receiver(
    cpu: str | None, log_dir: Path, agents: int = 1
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Any]]]:
    """The receiver process (receiver.py) and its ports: ``grpc`` (OTLP), ``agent`` and ``agents`` (one dummy
    Datadog agent per server id 0..agents-1)."""
    ports_file = Path(tempfile.mkdtemp(prefix="obskit-bench-")) / "ports.json"
    log = open(log_dir / "receiver.log", "wb")  # noqa: SIM115
    env = clean_env()
    env["PYTHONPATH"] = str(SRC)
    # Niced: the receiver stands in for a collector on another machine. Sharing the load generator's CPU at normal
    # priority, its decoding of each export batch stalled wrk's reads for milliseconds: that showed up as p99 latency
    # of every exporting variant (obskit full 10.9 -> 7.5-8.0 ms niced, same server CPU per request).
    command = [sys.executable, str(HERE / "receiver.py"), "--ports-file", str(ports_file), "--agents", str(agents)]
    proc = subprocess.Popen(
        ["nice", "-n", "19", *pin(cpu), *command],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not ports_file.exists() or not ports_file.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"receiver did not start: {(log_dir / 'receiver.log').read_text()}")
            time.sleep(0.05)
        time.sleep(0.05)
        yield proc, json.loads(ports_file.read_text())
    finally:
        stop(proc)
        log.close()


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
    """Signal our own server (its own session), then SIGKILL its group if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def stats(ports: dict[str, Any], server: str = "") -> dict[str, int]:
    """What the receiver counted for the server known to it as ``server`` (see receiver.py)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['agent']}/stats", timeout=5) as r:
        counts = json.load(r)
    suffix = f"@{server}"
    return {key[: -len(suffix)]: int(value) for key, value in counts.items() if key.endswith(suffix)}


_handed_out: set[int] = set()


def free_port() -> int:
    """A port for a server: free now, never handed out before in this process, and below the kernel's ephemeral
    range, so that no outgoing connection (wrk's, an exporter's) can take it before the server binds it.

    With a round's servers started side by side, a port from ``bind(0)`` was once taken between this check and
    the server's own bind (session 12): gunicorn gave up, and its slices measured whichever server held the port.
    """
    import socket

    low = 32768
    with contextlib.suppress(OSError, ValueError, IndexError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    below = range(max(1024, low - 12000), low)
    # 0 last: the kernel's choice, if the range below is unusable.
    for port in [*random.sample(below, min(2000, len(below))), 0]:
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = int(sock.getsockname()[1])
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port")


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> int:
    """Poll /healthz until ``proc`` (or one of its workers) answers it; returns how many requests that took.

    The app's /healthz names its process: an answer from another process holding the port is not ours.
    """
    deadline = time.monotonic() + timeout
    tries = 0
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        tries += 1
        with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(url + "/healthz", timeout=2) as r:
            if r.status == 200:
                pid = json.load(r).get("pid")
                if pid == proc.pid or pid in descendants(proc.pid):
                    return tries
                raise RuntimeError(f"{url} is served by process {pid}, not by server {proc.pid}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"server not ready in {timeout}s:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)


def alive(server_proc: subprocess.Popen[bytes], log: Path) -> None:
    """Raise if the server exited (its slices would have measured nothing of its own)."""
    if server_proc.poll() is not None:
        raise RuntimeError(f"server exited with {server_proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")


def wrk(url: str, seconds: float, args: argparse.Namespace, lua: Path) -> dict[str, Any]:
    cmd = [
        *pin(args.client_cpu),
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(lua),
        url + "/predict",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            return dict(json.loads(line[len("WRKJSON ") :]))
    raise RuntimeError(f"no summary from wrk:\n{out}")


@dataclass
class _Server:
    """One variant's server process during its round, and what its slices measured so far."""

    cfg: Config
    sid: str  # its id at the receiver (the bench.server resource attribute, its dummy agent)
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    before: dict[str, int]
    ready_requests: int = 0  # the /healthz polls it took to answer
    warm_requests: int = 0
    requests: int = 0
    duration_us: int = 0
    cpu_ticks: int = 0
    rx_ticks: int = 0
    errors: int = 0
    p50_us: list[float] = field(default_factory=list)
    p99_us: list[float] = field(default_factory=list)


def start_server(cfg: Config, sid: int, rnd: int, args: argparse.Namespace, ports: dict[str, Any]) -> _Server:
    """Start ``cfg``'s server (not waiting for it), known to the receiver as ``sid``."""
    port = free_port()
    log = args.out / "logs" / f"{cfg.framework}-{cfg.variant}-{cfg.routes}-r{rnd}.log"
    own_ports = {**ports, "agent": ports["agents"][sid]}
    env = server_env(cfg, own_ports, args.baseline_src)
    env["OTEL_RESOURCE_ATTRIBUTES"] = f"bench.server={sid}"
    before = stats(ports, str(sid))
    with open(log, "wb") as log_file:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            server_command(cfg, port, args.server_cpu),
            cwd=HERE,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return _Server(cfg, str(sid), proc, f"http://127.0.0.1:{port}", log, before)


def measure_slice(server: _Server, args: argparse.Namespace, rx_pid: int, lua: Path) -> None:
    """One slice of ``args.slice`` seconds of wrk against ``server``, added to its totals."""
    cpu0, rx0 = cpu_ticks(server.proc.pid), cpu_ticks(rx_pid)
    result = wrk(server.url, args.slice, args, lua)
    cpu1, rx1 = cpu_ticks(server.proc.pid), cpu_ticks(rx_pid)
    server.requests += int(result["requests"])
    server.duration_us += int(result["duration_us"])
    server.cpu_ticks += cpu1 - cpu0
    server.rx_ticks += rx1 - rx0
    server.errors += sum(int(result[k]) for k in ("connect", "read", "write", "status", "timeout"))
    server.p50_us.append(float(result["p50_us"]))
    server.p99_us.append(float(result["p99_us"]))


def stop_server(server: _Server) -> None:
    # uvicorn (>= 0.29) re-raises SIGTERM after its graceful shutdown with the default handler, which kills the
    # process before atexit: the SDKs' final flush is lost and the exported counts come up short. SIGINT ends it
    # through KeyboardInterrupt, so atexit (and the flush) runs.
    stop(server.proc, sig=signal.SIGINT if server.cfg.framework == "fastapi" else signal.SIGTERM)


def run_group(
    cfgs: list[Config],
    rnd: int,
    args: argparse.Namespace,
    ports: dict[str, Any],
    rx_pid: int,
    lua: Path,
    rng: random.Random,
    sids: dict[Config, int],
) -> list[Sample]:
    """One round of one framework: its variants' servers side by side, taking turns in short slices.

    Every server is a fresh process, started and warmed up before the first slice and stopped after the last.
    The slices then go round the servers (a fresh order each time), so the bare server and every variant are
    measured within seconds of each other, many times over: this VM's speed drifts by 10-20% over a minute
    (session 12), which a 5-second run per variant, minutes away from its bare pair, took into the ratios.
    """
    servers: list[_Server] = []
    try:
        for cfg in cfgs:
            servers.append(start_server(cfg, sids[cfg], rnd, args, ports))
        for s in servers:
            s.ready_requests = wait_ready(s.url, s.proc, s.log)
            if args.warmup > 0:
                s.warm_requests = int(wrk(s.url, args.warmup, args, lua)["requests"])
        for _ in range(args.slices):
            order = servers[:]
            rng.shuffle(order)
            for s in order:
                alive(s.proc, s.log)
                measure_slice(s, args, rx_pid, lua)
        for s in servers:
            alive(s.proc, s.log)
    finally:
        for s in servers:
            stop_server(s)
    time.sleep(0.3)  # the last exports' replies are in; let the receiver count them
    samples = []
    for s in servers:
        after = stats(ports, s.sid)
        exported = {k: after.get(k, 0) - s.before.get(k, 0) for k in set(after) | set(s.before)}
        text = s.log.read_text(errors="replace")
        requests = max(1, s.requests)
        samples.append(
            Sample(
                framework=s.cfg.framework,
                variant=s.cfg.variant,
                routes=s.cfg.routes,
                round=rnd,
                rps=s.requests / (s.duration_us / 1e6),
                requests=s.requests,
                errors=s.errors,
                p50_us=statistics.median(s.p50_us),
                p99_us=statistics.median(s.p99_us),
                cpu_us_per_request=s.cpu_ticks * 1e6 / CLK_TCK / requests,
                receiver_cpu_us_per_request=s.rx_ticks * 1e6 / CLK_TCK / requests,
                total_requests=s.ready_requests + s.warm_requests + s.requests,
                exported={k: v for k, v in exported.items() if v},
                log=text[-2000:] if ("Traceback" in text or "Error" in text) else "",
            )
        )
    return samples


# ---------------------------------------------------------------------------------------------------------------
# summary


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(samples: list[Sample], args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    by: dict[tuple[str, str, int], dict[int, Sample]] = {}
    for s in samples:
        by.setdefault((s.framework, s.variant, s.routes), {})[s.round] = s

    def paired(fw: str, variant: str, routes: int = 10, base: str = "bare", base_routes: int = 10) -> list[float]:
        num, den = by.get((fw, variant, routes), {}), by.get((fw, base, base_routes), {})
        return [num[r].rps / den[r].rps for r in sorted(num) if r in den]

    def paired_cpu(fw: str, variant: str) -> list[float]:
        """Bare CPU per request over the variant's: the throughput ratio of a server that is CPU-bound."""
        num, den = by.get((fw, variant, 10), {}), by.get((fw, "bare", 10), {})
        return [den[r].cpu_us_per_request / num[r].cpu_us_per_request for r in sorted(num) if r in den]

    def overhead_us(fw: str, variant: str, routes: int) -> tuple[list[float], list[float]]:
        """Per-round added wall time (1/rps) and added server CPU per request over the bare server."""
        num, den = by.get((fw, variant, routes), {}), by.get((fw, "bare", routes), {})
        wall = [1e6 / num[r].rps - 1e6 / den[r].rps for r in sorted(num) if r in den]
        cpu = [num[r].cpu_us_per_request - den[r].cpu_us_per_request for r in sorted(num) if r in den]
        return wall, cpu

    frameworks = [fw for fw in args.frameworks if any(k[0] == fw for k in by)]
    lines = [
        f"{args.rounds} rounds. In each, a framework's variants run side by side, each a fresh server process "
        f"warmed up for {args.warmup:g}s, and take turns under wrk -t{args.threads} -c{args.connections} in "
        f"{args.slices} slices of {args.slice}s each (a fresh order every turn). "
        "Ratio = requests/s over the bare server's in the same round (median of the rounds, [min-max]); "
        "CPU = server CPU µs per request (utime+stime of the server and its workers); "
        "CPU ratio = bare CPU µs/request over the variant's (paired, median): the req/s ratio of a CPU-bound "
        "server, steadier than req/s when other processes share the machine; "
        "spans/req = spans the receiver got per request sent (ddtrace: traces); "
        "p99 = wrk's 99th percentile latency (median of the slices, then of the rounds; closed loop with "
        f"{args.connections} connections).",
        "",
        "| variant | "
        + " | ".join(
            f"{fw} req/s | {fw} ratio | {fw} CPU µs/req | {fw} CPU ratio | {fw} spans/req | {fw} p99 ms"
            for fw in frameworks
        )
        + " |",
        "|---|" + "---:|---:|---:|---:|---:|---:|" * len(frameworks),
    ]
    data: dict[str, Any] = {"ratios": {}, "cpu_ratios": {}, "cpu": {}, "rps": {}, "p99_ms": {}, "routes": {}}
    for variant in args.variants:
        cells = []
        for fw in frameworks:
            runs = list(by.get((fw, variant, 10), {}).values())
            if not runs:
                cells.append("- | - | - | - | - | -")
                continue
            ratios = paired(fw, variant)
            cpu_ratios = paired_cpu(fw, variant)
            data["cpu_ratios"][f"{fw}/{variant}"] = med(cpu_ratios)
            rps = med([s.rps for s in runs])
            cpu = med([s.cpu_us_per_request for s in runs])
            spans = med([s.exported.get("traces", 0) / max(1, s.total_requests) for s in runs])
            if variant == "ddtrace":
                spans = med([s.exported.get("dd_traces", 0) / max(1, s.total_requests) for s in runs])
            data["ratios"][f"{fw}/{variant}"] = med(ratios)
            data["cpu"][f"{fw}/{variant}"] = cpu
            data["rps"][f"{fw}/{variant}"] = rps
            p99 = med([s.p99_us / 1000 for s in runs])
            data["p99_ms"][f"{fw}/{variant}"] = p99
            ratio_cell = f"{med(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]" if ratios else "-"
            errors = sum(s.errors for s in runs)
            spans_cell = f"{spans:.2f}" + (" traces" if variant == "ddtrace" else "") if spans else "0"
            cells.append(
                f"{rps:,.0f} | {ratio_cell} | {cpu:.0f} | {med(cpu_ratios):.2f}x | {spans_cell} | {p99:.1f}"
                + (f" ({errors} errors)" if errors else "")
            )
        lines.append(f"| {label(variant)} | " + " | ".join(cells) + " |")

    # Added server CPU over bare, as the median of per-round differences: steadier than a ratio of medians.
    lines += [
        "",
        "Added server CPU per request over bare, µs (median of the per-round differences [min-max]):",
        "",
        "| variant | " + " | ".join(frameworks) + " |",
        "|---|" + "---:|" * len(frameworks),
    ]
    data["added_cpu_us"] = {}
    for variant in args.variants:
        if variant == "bare":
            continue
        cells = []
        for fw in frameworks:
            _, cpu = overhead_us(fw, variant, 10)
            data["added_cpu_us"][f"{fw}/{variant}"] = med(cpu)
            cells.append(f"{med(cpu):+.0f} [{min(cpu):+.0f} to {max(cpu):+.0f}]" if cpu else "-")
        lines.append(f"| {label(variant)} | " + " | ".join(cells) + " |")

    pairs = [(v, v + BASE) for v in args.variants if v + BASE in args.variants]
    if pairs:
        lines += [
            "",
            f"A/B: this source ({SRC}) minus the baseline ({args.baseline_src}), paired round by round "
            "(median [min-max] of the per-round differences; negative = this source is cheaper):",
            "",
            "| variant | " + " | ".join(f"{fw} CPU µs/req | {fw} wall µs/req" for fw in frameworks) + " |",
            "|---|" + "---:|---:|" * len(frameworks),
        ]
        data["ab"] = {}
        for variant, base in pairs:
            cells = []
            for fw in frameworks:
                now, then = by.get((fw, variant, 10), {}), by.get((fw, base, 10), {})
                rounds = [r for r in sorted(now) if r in then]
                cpu = [now[r].cpu_us_per_request - then[r].cpu_us_per_request for r in rounds]
                wall = [1e6 / now[r].rps - 1e6 / then[r].rps for r in rounds]
                if not rounds:
                    cells.append("- | -")
                    continue
                data["ab"][f"{fw}/{variant}"] = {"cpu_us": med(cpu), "wall_us": med(wall)}
                cells.append(
                    f"{med(cpu):+.1f} [{min(cpu):+.0f} to {max(cpu):+.0f}] | "
                    f"{med(wall):+.1f} [{min(wall):+.0f} to {max(wall):+.0f}]"
                )
            lines.append(f"| {LABELS[variant]} | " + " | ".join(cells) + " |")

    if args.routes_scaling:
        lines += [
            "",
            "Routes scaling (obskit full): added time per request over the bare server with the same routes "
            "(wall = 1/req·s difference, CPU = server CPU difference; medians of per-round differences).",
            "",
            "| framework | overhead @10 routes wall / CPU µs | overhead @1,000 routes wall / CPU µs | "
            "ratio 1,000/10 (wall, CPU) | bare 1,000 vs 10 routes req/s |",
            "|---|---:|---:|---:|---:|",
        ]
        for fw in frameworks:
            w10, c10 = overhead_us(fw, "obskit_full", 10)
            w1k, c1k = overhead_us(fw, "obskit_full", 1000)
            bare_ratio = paired(fw, "bare", 1000)
            if not (w10 and w1k):
                continue
            rw, rc = med(w1k) / med(w10), med(c1k) / med(c10)
            data["routes"][fw] = {"wall10": med(w10), "wall1000": med(w1k), "cpu10": med(c10), "cpu1000": med(c1k)}
            lines.append(
                f"| {fw} | {med(w10):.0f} / {med(c10):.0f} | {med(w1k):.0f} / {med(c1k):.0f} | "
                f"{rw:.2f}x, {rc:.2f}x | {med(bare_ratio):.2f}x |"
            )

    lines += ["", "| issue target | req/s ratio | CPU ratio | verdict |", "|---|---:|---:|---|"]
    for fw, variant, target in TARGETS:
        ratio = data["ratios"].get(f"{fw}/{variant}")
        cpu_ratio = data["cpu_ratios"].get(f"{fw}/{variant}")
        if ratio is not None and cpu_ratio is not None:
            verdict = "met" if target_met(ratio, cpu_ratio, target) else "**not met**"
            lines.append(f"| {variant} on {fw} >= {target:.2f}x | {ratio:.3f}x | {cpu_ratio:.3f}x | {verdict} |")
    for fw, r in data["routes"].items():
        ratio = max(r["wall1000"] / r["wall10"], r["cpu1000"] / r["cpu10"])
        verdict = "met" if ratio <= 1.10 else "**not met**"
        wall, cpu = r["wall1000"] / r["wall10"], r["cpu1000"] / r["cpu10"]
        lines.append(
            f"| {fw}: obskit overhead @1,000 routes within 10% of @10 (over HTTP; see also the routes step) "
            f"| {wall:.2f}x | {cpu:.2f}x | {verdict} |"
        )

    problems = [s for s in samples if s.errors or s.log]
    if problems:
        lines += ["", "Runs with errors or a logged traceback:"]
        for s in problems:
            lines.append(f"- {s.framework}/{s.variant}/{s.routes} round {s.round}: {s.errors} errors {s.log[:300]!r}")
    return "\n".join(lines), data


# ---------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Five: the process-to-process spread (a fresh server's overhead moves by +-10 us, session 12) is only averaged
    # over rounds, and the routes-scaling target compares two such overheads.
    parser.add_argument("--rounds", type=int, default=int(env.get("ROUNDS", "5")))
    parser.add_argument(
        "--duration",
        type=float,
        default=float(env.get("DURATION", "5")),
        help="measured seconds per variant and round, in slices of --slice seconds",
    )
    parser.add_argument("--slice", type=int, default=int(env.get("SLICE", "1")), help="seconds per slice (wrk -d)")
    parser.add_argument("--warmup", type=float, default=float(env.get("WARMUP", "1")))
    parser.add_argument("--connections", type=int, default=int(env.get("CONNECTIONS", "8")))
    parser.add_argument("--threads", type=int, default=int(env.get("THREADS", "1")))
    parser.add_argument("--frameworks", nargs="+", default=env.get("FRAMEWORKS", " ".join(FRAMEWORKS)).split())
    parser.add_argument("--variants", nargs="+", default=env.get("VARIANTS", " ".join(VARIANTS)).split())
    parser.add_argument("--no-routes-scaling", dest="routes_scaling", action="store_false")
    parser.add_argument("--seed", type=int, default=int(env.get("SEED", "8")))
    parser.add_argument("--pin", type=int, default=int(env.get("PIN", "1" if (os.cpu_count() or 1) >= 2 else "0")))
    parser.add_argument("--out", type=Path, default=HERE / "results" / time.strftime("%Y%m%d-%H%M%S"))
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=Path(env["OBSKIT_BASELINE_SRC"]) if env.get("OBSKIT_BASELINE_SRC") else None,
        help="A/B mode: also serve every obskit variant from this obskit source (the directory holding obskit/)",
    )
    args = parser.parse_args(argv)
    args.rounds = max(1, args.rounds)
    args.slice = max(1, args.slice)
    args.slices = max(1, round(args.duration / args.slice))
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; expected some of {VARIANTS}")
    if args.baseline_src is not None:
        if not (args.baseline_src / "obskit" / "__init__.py").is_file():
            parser.error(f"--baseline-src {args.baseline_src}: no obskit/__init__.py there")
        args.variants += [v + BASE for v in args.variants if v.startswith("obskit")]
    if args.routes_scaling and "bare" not in args.variants:
        args.variants.insert(0, "bare")
    # Server on CPU 1; wrk and the receiver share CPU 0, so the server's core is its own.
    args.server_cpu, args.client_cpu = ("1", "0") if args.pin else (None, None)
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    lua = args.out / "post.lua"
    lua.write_text(LUA)

    configs = [Config(fw, v, 10) for fw in args.frameworks for v in args.variants]
    if args.routes_scaling:
        configs += [Config(fw, v, 1000) for fw in args.frameworks for v in ROUTE_VARIANTS]
    rng = random.Random(args.seed)
    sids = {cfg: i for i, cfg in enumerate(configs)}
    samples: list[Sample] = []
    started = time.monotonic()
    with receiver(args.client_cpu, args.out / "logs", agents=len(configs)) as (rx, ports):
        for rnd in range(1, args.rounds + 1):
            frameworks = list(args.frameworks)
            rng.shuffle(frameworks)
            for fw in frameworks:
                group = [cfg for cfg in configs if cfg.framework == fw]
                rng.shuffle(group)
                for sample in run_group(group, rnd, args, ports, rx.pid, lua, rng, sids):
                    samples.append(sample)
                    key = f"{sample.framework}/{sample.variant}/{sample.routes}"
                    print(
                        f"[round {rnd}/{args.rounds} {time.monotonic() - started:5.0f}s] "
                        f"{key:<28} {sample.rps:8.0f} req/s  {sample.cpu_us_per_request:6.0f} µs CPU/req  "
                        f"p99 {sample.p99_us / 1000:6.1f} ms  exported {sample.exported}"
                        + (f"  ERRORS {sample.errors}" if sample.errors else ""),
                        flush=True,
                    )
    (args.out / "http.json").write_text(json.dumps([asdict(s) for s in samples], indent=1))
    table, data = summarise(samples, args)
    (args.out / "http.md").write_text(table + "\n")
    (args.out / "http-summary.json").write_text(json.dumps(data, indent=1))
    print()
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
