"""The ``obskit`` command line (also ``python -m obskit``).

Subcommands::

    obskit check                      effective configuration, and a test span to the collector
    obskit tail                       local OTLP receiver that prints what it receives
    obskit slo render SLO.yaml        Prometheus recording rules and burn-rate alerts
    obskit slo argo SLO.yaml          Argo Rollouts AnalysisTemplate with the gate's queries
    obskit gate --prometheus URL SLO.yaml [--selector LABELS] [--window 5m]
    obskit dashboard [--slo SLO.yaml] Grafana dashboard JSON

Exit codes:
    0    success; for ``check``, every enabled OTLP endpoint is reachable; for ``gate``, every objective passes.
    1    ``check``: an OTLP endpoint is unreachable; ``gate``: at least one objective fails (its name is printed).
    2    no result: a usage or configuration error (bad arguments, an invalid SLO file; the message names the
         file, the path inside it and what is accepted), or, for ``gate``, inconclusive (no data, or
         Prometheus unreachable).
    130  interrupted (Ctrl-C).

Each subcommand's work lives in its own module, imported only when that subcommand runs, so ``obskit --help``
stays fast. ``check`` and ``tail`` live in ``obskit._check`` and ``obskit._tail``, each exposing
``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ._version import __version__
from .exceptions import ConfigError

__all__ = ["EXIT_FAIL", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK: Final = 0
EXIT_FAIL: Final = 1
EXIT_USAGE: Final = 2  # also the gate's "inconclusive": no verdict either way
EXIT_INTERRUPTED: Final = 130

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


@dataclass(frozen=True, slots=True)
class _Command:
    name: str
    help: str
    module: str | None = None  # a module with add_arguments/run, imported when the subcommand is chosen
    add_arguments: AddArguments | None = None  # or the two functions, defined in this file
    run: Run | None = None

    def available(self) -> bool:
        if self.module is None:
            return True
        try:
            return importlib.util.find_spec(self.module) is not None
        except ImportError:
            return False

    def load(self) -> tuple[AddArguments, Run]:
        if self.module is None:
            assert self.add_arguments is not None
            assert self.run is not None
            return self.add_arguments, self.run
        module = importlib.import_module(self.module)
        return module.add_arguments, module.run


# --------------------------------------------------------------------------------------------------------------
# slo, gate, dashboard: argument parsing here, the work in obskit.slo.


def _selector_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--selector",
        metavar="LABELS",
        default="",
        help="PromQL label matchers, e.g. 'job=\"canary\"'; each replaces the SLO file's matcher on the same label "
        '(default selector: job="<service>") and other labels are added',
    )


def _output_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("-o", "--output", metavar="FILE", help=f"write the {what} to FILE instead of stdout")


def _slo_file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("slo_file", metavar="SLO.yaml", help="the SLO file (see docs/slo.md)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative; expected 0 or more")
    return value


def _slo_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="slo_command", metavar="{render,argo}")
    render = sub.add_parser(
        "render",
        help="write Prometheus recording rules and multi-window multi-burn-rate alerts",
        description="Write a Prometheus rule file: error-ratio recording rules over 5m..3d and page/ticket "
        "burn-rate alerts (SRE workbook). Check it with `promtool check rules FILE`.",
    )
    _slo_file_argument(render)
    _output_argument(render, "rule file")
    _selector_argument(render)
    render.set_defaults(_slo_run=_run_slo_render)

    argo = sub.add_parser(
        "argo",
        help="write an Argo Rollouts AnalysisTemplate whose queries are the gate's",
        description="Write an Argo Rollouts AnalysisTemplate (argoproj.io/v1alpha1) with one Prometheus metric "
        "per objective; its query is exactly what `obskit gate` evaluates.",
    )
    _slo_file_argument(argo)
    _output_argument(argo, "AnalysisTemplate")
    _selector_argument(argo)
    argo.add_argument("--window", default="5m", help="PromQL range each measurement covers (default: 5m)")
    argo.add_argument("--interval", default="1m", help="time between measurements (default: 1m)")
    argo.add_argument("--count", type=_positive_int, default=5, help="number of measurements (default: 5)")
    argo.add_argument(
        "--failure-limit", type=_positive_int, default=1, help="failed measurements tolerated (default: 1)"
    )
    argo.add_argument("--name", help="metadata.name of the template (default: <service>-slo)")
    argo.add_argument("--prometheus", metavar="URL", help="default value of the template's prometheus-address argument")
    argo.set_defaults(_slo_run=_run_slo_argo)
    parser.set_defaults(_slo_usage=parser)


def _run_slo(args: argparse.Namespace) -> int:
    run: Run | None = getattr(args, "_slo_run", None)
    return run(args) if run is not None else _usage(args._slo_usage)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _write(text: str, output: str | None) -> int:
    if output is None or output == "-":
        sys.stdout.write(text)
        return EXIT_OK
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"-o {output!r}: cannot write ({exc.strerror or exc})") from None
    print(f"wrote {output}", file=sys.stderr)
    return EXIT_OK


def _run_slo_render(args: argparse.Namespace) -> int:
    from .slo._model import load_slo_file, parse_selector
    from .slo._rules import render_rules

    override = parse_selector(args.selector, what="--selector") if args.selector else ()
    return _write(render_rules(load_slo_file(args.slo_file), override), args.output)


def _run_slo_argo(args: argparse.Namespace) -> int:
    from .slo._argo import render_analysis_template
    from .slo._model import load_slo_file, parse_duration, parse_selector

    override = parse_selector(args.selector, what="--selector") if args.selector else ()
    text = render_analysis_template(
        load_slo_file(args.slo_file),
        override=override,
        window=parse_duration(args.window, what="--window"),
        interval=parse_duration(args.interval, what="--interval"),
        count=args.count,
        failure_limit=args.failure_limit,
        name=args.name,
        prometheus=args.prometheus,
    )
    return _write(text, args.output)


def _gate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prometheus",
        metavar="URL",
        required=True,
        help="base URL of the Prometheus HTTP API, e.g. http://localhost:9090",
    )
    _slo_file_argument(parser)
    _selector_argument(parser)
    parser.add_argument("--window", default="5m", help="PromQL range to evaluate over (default: 5m)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per query (default: 10)")
    parser.add_argument("--show-queries", action="store_true", help="print each objective's PromQL")
    parser.add_argument("--json", action="store_true", help="print the verdicts as JSON instead of a table")


def _run_gate(args: argparse.Namespace) -> int:
    from .slo._gate import run_gate
    from .slo._model import load_slo_file, parse_duration, parse_selector

    override = parse_selector(args.selector, what="--selector") if args.selector else ()
    if not args.timeout > 0:
        raise ConfigError(f"--timeout {args.timeout!r}: expected a positive number of seconds")
    return run_gate(
        load_slo_file(args.slo_file),
        args.prometheus,
        window=parse_duration(args.window, what="--window"),
        override=override,
        timeout=args.timeout,
        show_queries=args.show_queries,
        json_output=args.json,
    )


def _dashboard_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slo", metavar="SLO.yaml", help="add error-ratio and burn-rate panels for these SLOs")
    _output_argument(parser, "dashboard JSON")
    _selector_argument(parser)


def _run_dashboard(args: argparse.Namespace) -> int:
    from .slo._dashboard import render_dashboard
    from .slo._model import load_slo_file, parse_selector

    override = parse_selector(args.selector, what="--selector") if args.selector else ()
    slo = load_slo_file(args.slo) if args.slo else None
    return _write(render_dashboard(slo, override=override), args.output)


_COMMANDS: Final = (
    _Command("check", "print the effective configuration and send a test span to the collector", "obskit._check"),
    _Command("tail", "run a local OTLP receiver and print the spans and metrics it receives", "obskit._tail"),
    _Command(
        "slo", "render Prometheus rules or an Argo AnalysisTemplate from an SLO file", None, _slo_arguments, _run_slo
    ),
    _Command(
        "gate",
        "evaluate SLOs against Prometheus now: exit 0 pass, 1 fail, 2 inconclusive",
        None,
        _gate_arguments,
        _run_gate,
    ),
    _Command(
        "dashboard", "write a Grafana dashboard (JSON) for obskit's metrics", None, _dashboard_arguments, _run_dashboard
    ),
)


_EXIT_CODES: Final = """exit codes:
  0    success; check: every endpoint reachable; gate: every objective passes
  1    check: an OTLP endpoint is unreachable; gate: at least one objective fails
  2    usage or configuration error; gate: inconclusive (no data, Prometheus unreachable)
  130  interrupted"""


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the ``selected`` subcommand's module is imported (others get just their help line)."""
    parser = argparse.ArgumentParser(
        prog="obskit",
        description="OpenTelemetry for Flask and FastAPI model servers: configuration check, local receiver,\n"
        "SLO rules, canary gates and dashboards.",
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"obskit {__version__}")
    commands = [c for c in _COMMANDS if c.available()]
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(c.name for c in commands) + "}")
    for command in commands:
        child = sub.add_parser(command.name, help=command.help, description=command.help[0].upper() + command.help[1:])
        if command.name == selected:
            add_arguments, run = command.load()
            add_arguments(child)
            child.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``obskit`` command and return its exit code.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when ``None`` (console scripts).

    Returns:
        0 success, 1 unreachable endpoint (check) or failed objective (gate), 2 usage/configuration error or
        inconclusive gate (see the module docstring).

    Example:
        >>> main(["slo", "render", "examples/slo.yaml", "-o", "rules.yaml"])  # doctest: +SKIP
        0
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    names = {c.name for c in _COMMANDS}
    selected = next((a for a in args_list if not a.startswith("-")), None)
    try:
        parser = build_parser(selected if selected in names else None)
        args = parser.parse_args(args_list)
        run: Run | None = getattr(args, "_run", None)
        if run is None:
            return _usage(parser)
        return int(run(args))
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
    except ConfigError as exc:
        print(f"obskit: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
