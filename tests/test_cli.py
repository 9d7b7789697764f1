"""``obskit check`` and the command line, run as subprocesses (``python -m obskit``) against a real receiver."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping

import pytest

import obskit
from e2e._servers import free_port
from obskit import ConfigError
from obskit.testing import OtlpReceiver


def obskit_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m obskit ARGS`` with a clean OTEL_*/OBSKIT_* environment plus ``env``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBSKIT_"))}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "obskit", *args], env=full, capture_output=True, text=True, timeout=timeout, check=False
    )


def row(output: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is ``first_cell``, wrapped cell text joined back together."""
    rows: list[list[str]] = []
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if not cells:
            continue
        if cells[0] == "" and rows and len(rows[-1]) == len(cells):  # continuation of a wrapped row
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    for cells in rows:
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{output}")


def test_help_lists_check_and_tail():
    """``obskit --help`` lists check and tail; each has its own --help with exit 0."""
    top = obskit_cli("--help")
    assert top.returncode == 0
    assert "check" in top.stdout
    assert "tail" in top.stdout
    check = obskit_cli("check", "--help")
    assert check.returncode == 0
    assert "--timeout SECONDS" in check.stdout
    assert "Exit 0 when every endpoint is reachable" in check.stdout
    tail = obskit_cli("tail", "--help")
    assert tail.returncode == 0
    for option in ("--host", "--grpc-port", "--http-port", "--json", "--duration"):
        assert option in tail.stdout


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_check_live_receiver_reachable(receiver: OtlpReceiver, protocol: str):
    """Against a live receiver every signal is reachable with a round-trip time, exit 0, and the items arrive."""
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    done = obskit_cli(
        "check",
        "--set",
        "service_name=checked-svc",
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    suffix = {"grpc": "", "http/protobuf": "/v1/{signal}"}[protocol]
    for signal in ("traces", "metrics", "logs"):
        cells = row(done.stdout, signal)
        assert cells[:5] == [signal, "otlp", protocol, endpoint + suffix.format(signal=signal), "reachable"]
        assert re.fullmatch(r"\d+ ms", cells[5])
        assert cells[6] == ""
    assert "All 3 OTLP endpoint checks passed." in done.stdout
    span = receiver.wait_for_span("obskit check", timeout=5)
    assert span.resource["service.name"] == "checked-svc"
    assert receiver.wait_for_metric("obskit.check", timeout=5).value == 1
    assert receiver.wait_for_log(body="obskit check: test log record", timeout=5).severity_text == "INFO"


def test_check_dead_port_unreachable_with_error():
    """Nothing listening: every signal is unreachable with the exporter's error, exit 1, within the timeout."""
    port = free_port()
    started = time.monotonic()
    done = obskit_cli("check", "--timeout", "1", env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"})
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stdout + done.stderr
    assert elapsed < 15
    for signal in ("traces", "metrics", "logs"):
        cells = row(done.stdout, signal)
        assert cells[1:5] == ["otlp", "grpc", f"http://127.0.0.1:{port}", "unreachable"]
        assert cells[6].startswith(f"Failed to export {signal} to 127.0.0.1:{port}, error code: StatusCode.UNAVAILABLE")
        assert "Connection refused" in cells[6]
    assert "3 of 3 endpoint checks failed." in done.stdout


def test_check_dead_http_port_names_the_cause():
    """Over http/protobuf the error includes the connection failure, not only 'max retries'."""
    port = free_port()
    done = obskit_cli(
        "check",
        "--timeout",
        "1",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        },
    )
    assert done.returncode == 1
    assert row(done.stdout, "traces")[4] == "unreachable"
    assert row(done.stdout, "metrics")[1:5] == ["none", "-", "-", "disabled"]
    error = row(done.stdout, "traces")[6]
    # The cause comes from the exporter's last retry message or, when it logged none, from a TCP connection attempt.
    assert error.startswith("Failed to export spans batch due to timeout, max retries or shutdown.")
    assert "Connection refused" in error


def test_check_scrubs_secrets_from_the_exporters_messages():
    """The detail column quotes the exporter's error: any header value (or URL password) in it is masked.

    The header's value is a word the real error message contains, so it is known to be there to scrub.
    """
    port = free_port()
    done = obskit_cli(
        "check",
        "--timeout",
        "1",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-token=refused",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        },
    )
    assert done.returncode == 1, done.stdout + done.stderr
    error = row(done.stdout, "traces")[6]
    assert error.startswith(f"Failed to export traces to 127.0.0.1:{port}, error code: StatusCode.UNAVAILABLE")
    assert "Connection ***" in error
    assert "refused" not in done.stdout


def test_check_mixed_signals_exit_1_when_one_fails(receiver: OtlpReceiver):
    """Traces reachable and logs sent to a dead per-signal endpoint: exit 1, the rows say which."""
    port = free_port()
    done = obskit_cli(
        "check",
        "--timeout",
        "1",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_METRICS_EXPORTER": "console",
        },
    )
    assert done.returncode == 1
    assert row(done.stdout, "traces")[4] == "reachable"
    assert row(done.stdout, "metrics")[1:7] == ["console", "-", "-", "not sent", "-", "written to the app's stdout"]
    assert row(done.stdout, "logs")[3:5] == [f"http://127.0.0.1:{port}", "unreachable"]
    assert "1 of 3 endpoint checks failed." in done.stdout


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "bogus"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "authorization"),
    ],
)
def test_check_bad_variable_prints_init_config_error(monkeypatch: pytest.MonkeyPatch, variable: str, value: str):
    """A malformed variable: exit 2 and exactly the ConfigError text obskit.init() raises, nothing on stdout."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        obskit.init()
    done = obskit_cli("check", env={variable: value})
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == f"obskit: error: {raised.value}\n"
    assert done.stderr.startswith(f"obskit: error: {variable}=")


def test_check_bad_set_argument_exit_2():
    """--set with an unknown init() keyword is the same ConfigError as init(bogus=...)."""
    done = obskit_cli("check", "--set", "bogus=1", "--no-send")
    assert done.returncode == 2
    assert done.stderr.startswith("obskit: error: init() got unknown argument(s) bogus; accepted: ")


def test_check_masks_secrets_and_shows_sources():
    """Header values and URL passwords never appear; sources say argument, environment or default."""
    done = obskit_cli(
        "check",
        "--no-send",
        "--set",
        "service_name=from-argument",
        env={
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20s3cr3t-token,x-tenant=t0p-s3cr3t",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-extra=another-s3cr3t",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://user:hunter2@127.0.0.1:4318",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",  # a gRPC endpoint cannot carry a password
            "OTEL_SERVICE_NAME": "from-environment",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        },
    )
    assert done.returncode == 0, done.stderr
    for secret in ("s3cr3t", "hunter2", "Bearer"):
        assert secret not in done.stdout + done.stderr
    assert row(done.stdout, "headers")[1:] == [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "authorization=***,x-tenant=***",
        "environment",
    ]
    assert row(done.stdout, "traces_headers")[2:] == ["x-extra=***", "environment"]
    assert row(done.stdout, "endpoint")[2:] == ["http://***@127.0.0.1:4318", "environment"]
    assert row(done.stdout, "service_name")[1:] == ["OTEL_SERVICE_NAME", "from-argument", "argument"]
    assert row(done.stdout, "timeout")[2:] == ["2500 ms", "environment"]
    assert row(done.stdout, "protocol")[2:] == ["http/protobuf", "environment"]
    assert row(done.stdout, "max_label_values")[1:] == ["OBSKIT_MAX_LABEL_VALUES", "100", "default"]
    assert "OTLP endpoints" not in done.stdout  # --no-send


def test_check_sdk_disabled_sends_nothing():
    """OTEL_SDK_DISABLED=true: the table, a note, exit 0, and no probe even with nothing listening."""
    done = obskit_cli("check", env={"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert done.returncode == 0
    assert row(done.stdout, "sdk_disabled")[2:] == ["true", "environment"]
    assert "OTEL_SDK_DISABLED=true: obskit installs nothing" in done.stdout
    assert "OTLP endpoints" not in done.stdout


def test_check_reports_the_cause_when_grpc_retried_until_the_deadline():
    """The gRPC exporter may retry a refused connection and end on DEADLINE_EXCEEDED (its backoff is random):
    obskit check reports the refused connection first, in the exporter's own error format."""
    import logging
    import threading

    from obskit._check import _ThreadRecords

    records = _ThreadRecords()

    def log(level: int, message: str) -> None:
        records.emit(logging.LogRecord("opentelemetry.exporter", level, __file__, 1, message, None, None))

    log(
        logging.WARNING,
        "Transient error StatusCode.UNAVAILABLE encountered while exporting traces to 127.0.0.1:9, retrying in "
        "0.84s. Error details: failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:9: "
        "Connection refused",
    )
    log(
        logging.ERROR,
        "Failed to export traces to 127.0.0.1:9, error code: StatusCode.DEADLINE_EXCEEDED, error details: "
        "Deadline Exceeded",
    )
    error = records.error_for(threading.get_ident())
    assert error.startswith("Failed to export traces to 127.0.0.1:9, error code: StatusCode.UNAVAILABLE")
    assert "Connection refused" in error
    assert error.endswith("(retried until the deadline: Failed to export traces to 127.0.0.1:9, error code: "
                          "StatusCode.DEADLINE_EXCEEDED, error details: Deadline Exceeded)")  # fmt: skip

    alone = _ThreadRecords()  # a deadline with no earlier failure is reported as it is
    alone.emit(
        logging.LogRecord("x", logging.ERROR, __file__, 1, "Failed ... StatusCode.DEADLINE_EXCEEDED", None, None)
    )
    assert alone.error_for(threading.get_ident()) == "Failed ... StatusCode.DEADLINE_EXCEEDED"
