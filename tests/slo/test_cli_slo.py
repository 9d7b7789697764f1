from __future__ import annotations

import importlib.machinery
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from obskit import cli
from obskit.slo import load_slo_file
from obskit.slo._dashboard import render_dashboard
from obskit.slo._model import parse_selector
from obskit.slo._rules import render_rules

from ._fake_prometheus import fake_prometheus, vector

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "examples" / "slo.yaml")


def test_top_level_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    """`obskit --help` exits 0 and lists slo, gate and dashboard with the exit codes."""
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("slo", "gate", "dashboard"):
        assert f"\n    {name} " in out
    assert "  1    check: an OTLP endpoint is unreachable; gate: at least one objective fails\n" in out
    assert "  2    usage or configuration error; gate: inconclusive (no data, Prometheus unreachable)\n" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["slo", "--help"], "{render,argo}"),
        (["slo", "render", "--help"], "--selector LABELS"),
        (["slo", "argo", "--help"], "--failure-limit"),
        (["gate", "--help"], "--prometheus URL"),
        (["dashboard", "--help"], "--slo SLO.yaml"),
    ],
)
def test_subcommand_help(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    """Every subcommand has --help, exiting 0."""
    assert cli.main(argv) == 0
    assert expected in capsys.readouterr().out


def test_slo_render_to_stdout_and_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`slo render` prints the rule file, or writes it with -o; --selector is applied."""
    assert cli.main(["slo", "render", EXAMPLE]) == 0
    assert capsys.readouterr().out == render_rules(load_slo_file(EXAMPLE))
    out = tmp_path / "rules.yaml"
    assert cli.main(["slo", "render", EXAMPLE, "-o", str(out), "--selector", 'job="canary"']) == 0
    assert out.read_text() == render_rules(load_slo_file(EXAMPLE), parse_selector('job="canary"'))
    assert capsys.readouterr().err == f"wrote {out}\n"


def test_slo_argo(capsys: pytest.CaptureFixture[str]) -> None:
    """`slo argo` prints an AnalysisTemplate with the options applied."""
    argv = ["slo", "argo", EXAMPLE, "--window", "2m", "--interval", "30s", "--count", "3", "--failure-limit", "0"]
    assert cli.main([*argv, "--prometheus", "http://prom:9090"]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["kind"] == "AnalysisTemplate"
    assert doc["spec"]["args"] == [{"name": "prometheus-address", "value": "http://prom:9090"}]
    assert all("[2m]" in m["provider"]["prometheus"]["query"] for m in doc["spec"]["metrics"])
    assert {(m["interval"], m["count"], m["failureLimit"]) for m in doc["spec"]["metrics"]} == {("30s", 3, 0)}


def test_dashboard(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`dashboard` prints Grafana JSON, with SLO panels when --slo is given."""
    assert cli.main(["dashboard"]) == 0
    assert capsys.readouterr().out == render_dashboard()
    out = tmp_path / "d.json"
    assert cli.main(["dashboard", "--slo", EXAMPLE, "-o", str(out)]) == 0
    assert out.read_text() == render_dashboard(load_slo_file(EXAMPLE))


def test_gate_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    """`gate` returns the verdict's exit code: 0 pass, 1 fail (named), 2 inconclusive."""
    with fake_prometheus(lambda q: vector(1)) as (url, _):
        assert cli.main(["gate", "--prometheus", url, EXAMPLE]) == 0
    with fake_prometheus(lambda q: vector(0.5) if "_bucket" in q and "obskit_model" in q else vector(1)) as (url, _):
        assert cli.main(["gate", "--prometheus", url, EXAMPLE, "--window", "1m"]) == 1
    assert "gate: FAIL (inference-latency)" in capsys.readouterr().out
    with fake_prometheus(lambda q: vector()) as (url, _):
        assert cli.main(["gate", "--prometheus", url, EXAMPLE, "--selector", 'job="nope"']) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["slo", "render", "missing.yaml"], "obskit: error: SLO file missing.yaml: cannot be read"),
        (["slo", "render", EXAMPLE, "--selector", "job=x"], "obskit: error: --selector 'job=x': not a list of PromQL"),
        (["slo", "argo", EXAMPLE, "--window", "5"], "obskit: error: --window '5': not a PromQL duration"),
        (["slo", "argo", EXAMPLE, "--interval", "1d"], "obskit: error: --interval '1d': Argo Rollouts reads this"),
        (
            ["gate", "--prometheus", "http://127.0.0.1:1", EXAMPLE, "--selector", 'job="\\q"'],
            'obskit: error: --selector \'job="\\\\q"\': the value "\\q" of job: unknown escape sequence \\q; expected',
        ),
        (
            ["slo", "render", EXAMPLE, "--selector", 'job=~"("'],
            'obskit: error: --selector \'job=~"("\': the value "(" of job: the regex does not compile',
        ),
        (
            ["gate", "--prometheus", "http://127.0.0.1:abc", EXAMPLE],
            "obskit: error: --prometheus 'http://127.0.0.1:abc'",
        ),
        (["gate", "--prometheus", "localhost:9090", EXAMPLE], "obskit: error: --prometheus 'localhost:9090'"),
        (["gate", "--prometheus", "http://x", EXAMPLE, "--timeout", "0"], "obskit: error: --timeout 0.0"),
        (["dashboard", "--slo", "missing.yaml"], "obskit: error: SLO file missing.yaml: cannot be read"),
        (["slo", "render", EXAMPLE, "-o", "/nonexistent-dir/x.yaml"], "obskit: error: -o '/nonexistent-dir/x.yaml'"),
    ],
)
def test_config_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    """ConfigError is printed to stderr (no traceback) and exits 2."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert "Traceback" not in err


def test_invalid_slo_file_message(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The CLI shows every problem of a bad SLO file with its path inside the file."""
    bad = tmp_path / "slo.yaml"
    bad.write_text("service: s\nobjectives:\n  - {name: a, type: latency, threshold: 0.3, target: 100}\n")
    assert cli.main(["slo", "render", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"obskit: error: SLO file {bad}: 2 problems" in err
    assert "objectives[0].target: 100 is outside (0, 100)" in err
    assert "objectives[0].threshold: 0.3s is not a bucket boundary of http.server.request.duration" in err
    assert "nearest boundaries: 0.25 and 0.5" in err


@pytest.mark.parametrize("argv", [[], ["slo"], ["bogus"], ["gate", EXAMPLE], ["slo", "argo", EXAMPLE, "--count", "-1"]])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """No subcommand, an unknown one, or missing/invalid arguments: usage on stderr, exit 2."""
    assert cli.main(argv) == 2
    assert "usage: obskit" in capsys.readouterr().err


def test_external_subcommands_are_lazy_and_optional(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A table entry's module is imported only when chosen; a missing module just hides the subcommand."""
    calls: list[str] = []
    module = types.ModuleType("obskit._fake_sub")
    module.__spec__ = importlib.machinery.ModuleSpec("obskit._fake_sub", None)

    def add_arguments(parser):  # type: ignore[no-untyped-def]
        calls.append("add_arguments")
        parser.add_argument("--flag", action="store_true")

    def run(args):  # type: ignore[no-untyped-def]
        calls.append(f"run flag={args.flag}")
        return 0

    module.add_arguments = add_arguments  # type: ignore[attr-defined]
    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "obskit._fake_sub", module)
    commands = (
        *cli._COMMANDS,
        cli._Command("fake", "a fake subcommand", "obskit._fake_sub"),
        cli._Command("ghost", "not written yet", "obskit._no_such_module"),
    )
    monkeypatch.setattr(cli, "_COMMANDS", commands)
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "fake" in out
    assert "ghost" not in out
    assert calls == []  # listing subcommands imports nothing
    assert cli.main(["fake", "--flag"]) == 0
    assert calls == ["add_arguments", "run flag=True"]
    assert cli.main(["ghost"]) == 2


def test_python_dash_m_and_lazy_imports() -> None:
    """`python -m obskit` works, and --help imports none of the subcommands' modules."""
    result = subprocess.run(
        [sys.executable, "-m", "obskit", "slo", "render", EXAMPLE], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == render_rules(load_slo_file(EXAMPLE))
    probe = (
        "import sys; from obskit.cli import main; code = main(['--help']); "
        "print(code, sorted(m for m in sys.modules if m.startswith('obskit.slo') or m == 'rich'))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.splitlines()[-1] == "0 []"


def test_non_utf8_slo_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A non-UTF-8 SLO file is a configuration error (exit 2), not a UnicodeDecodeError traceback."""
    bad = tmp_path / "slo.yaml"
    bad.write_bytes(b"\xff\xfe")
    for argv in (["slo", "render", str(bad)], ["slo", "argo", str(bad)], ["dashboard", "--slo", str(bad)]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert (
            err
            == f"obskit: error: SLO file {bad}: not UTF-8 text (byte 0xff at offset 0); expected a YAML file saved as UTF-8\n"
        )
