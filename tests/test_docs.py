"""README.md and docs/*.md: every snippet runs, and the reference tables agree with the code.

Conventions for fenced blocks (a block without one of these info strings fails ``test_every_block_is_classified``):

- ``python``: runs on its own in a fresh interpreter (as if pasted), with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing
  at a real receiver and the page's ``file=`` blocks in the working directory.
- ``python file=NAME.py``: written to NAME.py; when a page has ``test_*.py`` files, pytest runs them and every test
  must pass. README's ``main.py`` is served by uvicorn and must export a trace.
- ``python no-run``: shown only (kept to a minimum; the text says why).
- ``yaml``: parsed with ``yaml.safe_load_all``; the deployment page's files are also checked for meaning.
- ``bash``: each ``obskit`` command is parsed by the real argument parser, each ``VAR=value`` assignment of a
  configuration variable is parsed by the configuration table, ``make`` targets exist in the Makefile, and app
  paths (``module:app``) resolve.
- ``text``: output shown for reading.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from e2e._servers import free_port, serve, telemetry_env, uvicorn
from obskit import _semconv as sc
from obskit import _setup
from obskit._config import SETTINGS_TABLE, Setting
from obskit.testing import OtlpReceiver

ROOT = Path(__file__).resolve().parents[1]
PAGES = (
    "README.md",
    "docs/configuration.md",
    "docs/telemetry.md",
    "docs/deployment.md",
    "docs/troubleshooting.md",
    "docs/testing.md",
)
LANGUAGES = {"python", "yaml", "bash", "text"}
MAX_NO_RUN = 2  # across all pages
TABLE_START, TABLE_END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"
ENV_BY_NAME = {s.env: s for s in SETTINGS_TABLE if s.env}


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    language: str
    info: tuple[str, ...]
    text: str

    @property
    def file(self) -> str | None:
        return next((word.removeprefix("file=") for word in self.info if word.startswith("file=")), None)

    @property
    def runs(self) -> bool:
        return self.language == "python" and self.file is None and "no-run" not in self.info

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: str) -> list[Block]:
    text = (ROOT / page).read_text()
    found = []
    # Fences may be indented (a block inside a list item); the indent is removed from the content.
    for match in re.finditer(r"^([ \t]*)```([^\n]*)\n(.*?)^\1```[ \t]*$", text, re.M | re.S):
        indent, words = match.group(1), match.group(2).split()
        body = "".join(line.removeprefix(indent) for line in match.group(3).splitlines(keepends=True))
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(page, line, words[0] if words else "", tuple(words[1:]), body))
    return found


def all_blocks() -> list[Block]:
    return [b for page in PAGES for b in blocks(page)]


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


def snippet_env(rx: OtlpReceiver, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBSKIT_"))}
    env.update(telemetry_env(rx.grpc_endpoint))
    env["PYTHONPATH"] = os.pathsep.join([str(workdir), str(ROOT)])
    return env


def write_files(page: str, workdir: Path) -> list[Path]:
    written = []
    for block in blocks(page):
        if block.language == "python" and block.file:
            path = workdir / block.file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.text)
            written.append(path)
    return written


# --------------------------------------------------------------------------------------------------------------
# Every block is one of the known kinds, and runs or is checked.


def test_every_block_is_classified():
    """Each fenced block has a known language; python blocks run unless marked no-run, which stays rare."""
    unclassified = [str(b) for b in all_blocks() if b.language not in LANGUAGES]
    assert not unclassified, f"blocks without a known language ({sorted(LANGUAGES)}): {unclassified}"
    no_run = [str(b) for b in all_blocks() if "no-run" in b.info]
    assert len(no_run) <= MAX_NO_RUN, f"too many python no-run blocks: {no_run}"
    for page in PAGES:
        assert blocks(page), f"{page} has no code at all"


@pytest.mark.parametrize("page", [p for p in PAGES if any(b.runs for b in blocks(p))])
def test_python_blocks_run(page: str, receiver: OtlpReceiver, tmp_path: Path):
    """Every plain python block of the page runs by itself in a fresh interpreter and exits 0."""
    write_files(page, tmp_path)
    env = snippet_env(receiver, tmp_path)
    runnable = [b for b in blocks(page) if b.runs]

    def run(block: Block) -> tuple[Block, subprocess.CompletedProcess[str]]:
        # The block is compiled under its page and line, so a traceback points into the Markdown.
        driver = f"exec(compile({block.text!r}, {str(block)!r}, 'exec'), {{'__name__': '__main__'}})"
        done = subprocess.run(
            [sys.executable, "-c", driver], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        return block, done

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, runnable))
    failures = [f"--- {block} (exit {done.returncode})\n{done.stderr}" for block, done in results if done.returncode]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "page", [p for p in PAGES if any((b.file or "").rsplit("/", 1)[-1].startswith("test_") for b in blocks(p))]
)
def test_documented_test_files_pass(page: str, receiver: OtlpReceiver, tmp_path: Path):
    """The page's test files (a user's tests) pass under pytest with warnings as errors."""
    files = write_files(page, tmp_path)
    tests = sum(len(re.findall(r"^def test_", f.read_text(), re.M)) for f in files if f.name.startswith("test_"))
    assert tests
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=tmp_path,
        env=snippet_env(receiver, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{tests} passed" in done.stdout, done.stdout


@pytest.mark.parametrize("page", [p for p in PAGES if any(b.file for b in blocks(p))])
def test_python_files_compile(page: str):
    """Every file= block is valid Python."""
    for block in blocks(page):
        if block.language == "python" and block.file:
            compile(block.text, str(block), "exec")


@pytest.mark.parametrize("page", [p for p in PAGES if any(b.language == "yaml" for b in blocks(p))])
def test_yaml_blocks_parse(page: str):
    """Every yaml block is valid YAML."""
    for block in blocks(page):
        if block.language == "yaml":
            assert list(yaml.safe_load_all(block.text)), block


# --------------------------------------------------------------------------------------------------------------
# Shell blocks: commands and variables that exist.


def shell_commands(page: str) -> list[tuple[Block, list[str]]]:
    commands = []
    for block in blocks(page):
        if block.language != "bash":
            continue
        text = block.text.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.strip().removeprefix("$ ")
            if line and not line.startswith("#"):
                words = shlex.split(line, comments=True)
                for part in _split_on_operators(words):
                    commands.append((block, part))
    return commands


def _split_on_operators(words: list[str]) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for word in words:
        if word in ("&&", "||", ";", "|", "&"):
            parts.append([])
        else:
            parts[-1].append(word)
    return [p for p in parts if p]


def _check_assignment(block: Block, word: str) -> None:
    name, _, value = word.partition("=")
    setting = ENV_BY_NAME.get(name)
    if setting is None:
        assert not name.startswith(("OTEL_", "OBSKIT_")), f"{block}: unknown variable {name}"
        return
    if setting.type_doc != "path" and value and "$" not in value:
        try:
            setting.parse(value)
        except ValueError as exc:
            raise AssertionError(f"{block}: {word}: {exc}") from None


def _check_command(block: Block, words: list[str], files: set[str]) -> None:
    from obskit.cli import build_parser

    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        _check_assignment(block, words[0])
        words = words[1:]
    if not words:
        return
    program, args = words[0], words[1:]
    if program == "export":
        for word in args:
            _check_assignment(block, word)
    elif program == "obskit":
        subcommand = next((a for a in args if not a.startswith("-")), None)
        try:
            build_parser(subcommand).parse_args(args)
        except SystemExit as exc:
            raise AssertionError(f"{block}: `obskit {' '.join(args)}` does not parse") from exc
    elif program == "make":
        makefile = (ROOT / "Makefile").read_text()
        for target in (a for a in args if "=" not in a):
            assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"{block}: no make target {target}"
    elif program in ("uvicorn", "gunicorn"):
        for app in (a for a in args if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", a)):
            module = app.split(":")[0]
            path = module.replace(".", "/") + ".py"
            assert path in files or (ROOT / path).is_file(), f"{block}: {app} does not exist"
    elif program == "pip":
        extras = set(re.findall(r"^(\w+) = \[", _pyproject_extras(), re.M))
        for requirement in (a for a in args if a.startswith("obskit[")):
            for extra in requirement.removeprefix("obskit[").removesuffix("]").split(","):
                assert extra in extras, f"{block}: no extra {extra}"
    else:
        known = {"curl", "kubectl", "python", "pytest", "docker", "otelcol-contrib", "cd", "git"}
        assert program in known, f"{block}: unexpected command {program!r}; add it to the known list if meant"


def _pyproject_extras() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    return text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]


@pytest.mark.parametrize("page", [p for p in PAGES if any(b.language == "bash" for b in blocks(p))])
def test_shell_commands_exist(page: str):
    """obskit commands parse, variables hold valid values, make targets, apps and extras exist."""
    files = {b.file for b in blocks(page) if b.file}
    commands = shell_commands(page)
    assert commands
    for block, words in commands:
        _check_command(block, words, {f for f in files if f})


# --------------------------------------------------------------------------------------------------------------
# README.


def test_readme_quickstart_serves_and_exports(receiver: OtlpReceiver, tmp_path: Path):
    """README's main.py, served by uvicorn as the README says, answers /predict and exports its spans."""
    write_files("README.md", tmp_path)
    assert (tmp_path / "main.py").is_file()
    receiver.clear()
    port = free_port()
    env = {**telemetry_env(receiver.grpc_endpoint), "PYTHONPATH": str(tmp_path)}
    argv = [*uvicorn("main:app", port), "--app-dir", str(tmp_path)]
    with serve(argv, port, env, ready_path="/docs") as server:
        response = httpx.post(server.url + "/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}, timeout=10)
        assert response.status_code == 200
        root = receiver.wait_for_span("POST /predict", timeout=10)
        child = receiver.wait_for_span("inference iris", timeout=10)
    assert root.resource["service.name"] == "iris-classifier"
    assert child.parent_span_id == root.span_id
    assert response.json() == {"predictions": ["setosa"]}


def test_readme_links_resolve():
    """Relative links in README and docs point at files that exist."""
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", (ROOT / page).read_text()):
            assert (ROOT / page).parent.joinpath(target).exists(), f"{page}: broken link {target}"


# --------------------------------------------------------------------------------------------------------------
# configuration.md: the table is the code's.


def _code(text: str) -> str:
    return "`" + text.replace("|", "\\|") + "`"


def doc_default(setting: Setting) -> str:
    """The default as one would write it in the variable."""
    value = setting.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return _code(str(value).lower())
    if setting.type_doc == "milliseconds":
        return _code(str(round(value * 1000)))
    if setting.type_doc == "bytes":
        return _code(f"{value // 1024**2}MiB")
    if setting.type_doc == "level":
        import logging

        return _code(logging.getLevelName(value))
    if isinstance(value, dict | tuple | list):
        if not value:
            return "empty"
        return _code(",".join(str(v) for v in value))
    return _code(str(value))


def settings_table() -> str:
    lines = [
        "| Variable | `init()` argument | Type | Default | Example | Description |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in SETTINGS_TABLE:
        if s.env is None:
            continue
        argument = _code(s.name) if s.argument else "(environment only)"
        kind = s.type_doc + (", secret" if s.secret else "")
        example = _code(s.example) if s.example else ""
        doc = s.doc.replace("|", "\\|")
        lines.append(f"| {_code(s.env)} | {argument} | {kind} | {doc_default(s)} | {example} | {doc} |")
    return "\n".join(lines) + "\n"


def test_configuration_table_matches_settings():
    """docs/configuration.md's table is exactly the one generated from SETTINGS_TABLE."""
    path = ROOT / "docs" / "configuration.md"
    text = path.read_text()
    before, rest = text.split(TABLE_START + "\n", 1)
    current, after = rest.split(TABLE_END, 1)
    expected = settings_table()
    if os.environ.get("UPDATE_DOCS") == "1":
        path.write_text(before + TABLE_START + "\n" + expected + TABLE_END + after)
        current = expected
    assert current == expected, "docs/configuration.md is out of date: run UPDATE_DOCS=1 pytest tests/test_docs.py"


def test_documented_defaults_and_examples_parse():
    """Each default, written as documented, parses back to the default; each example is a valid value."""
    for s in SETTINGS_TABLE:
        if s.default is not None and s.default not in ({}, ()):
            written = doc_default(s).strip("`").replace("\\|", "|")
            assert s.parse(written) == s.default, s.env
        if s.example and s.type_doc != "path":
            s.parse(s.example)


def test_every_variable_is_on_the_configuration_page():
    """Every variable of the table appears in docs/configuration.md (and none that is not in the table)."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"`((?:OTEL|OBSKIT)_[A-Z_]+)`", text))
    known = set(ENV_BY_NAME) | {"OTEL_SEMCONV_STABILITY_OPT_IN"}
    assert set(ENV_BY_NAME) <= documented
    assert documented <= known, documented - known


# --------------------------------------------------------------------------------------------------------------
# telemetry.md: names, units and attributes are the code's.

_NOT_METRICS = ("ATTR_", "UNIT_", "STAGE_", "SIGNAL_", "PROM_", "DEFAULT_")


def semconv_metric_names() -> set[str]:
    """Metric names defined as constants: in _semconv, and the export buffer's own two."""
    from obskit import _buffer

    attributes = {value for key, value in vars(sc).items() if key.startswith("ATTR_")}
    names = {
        value
        for key, value in vars(sc).items()
        if key.isupper()
        and isinstance(value, str)
        and "." in value
        and not key.startswith(_NOT_METRICS)
        and key != "INSTRUMENTATION_NAME"
        and value not in attributes  # semconv's attribute constants imported under their own names
    }
    # Defined next to the buffer for now; found in _semconv above once they move there.
    names |= {getattr(_buffer, n) for n in ("TELEMETRY_BUFFERED", "EXPORT_BUFFER_USAGE") if hasattr(_buffer, n)}
    return names


@dataclass(frozen=True)
class MetricRow:
    name: str
    kind: str
    unit: str
    attributes: frozenset[str]


def telemetry_rows(heading: str) -> dict[str, MetricRow]:
    """Rows of the metric table under ``heading`` in docs/telemetry.md."""
    text = (ROOT / "docs" / "telemetry.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[0].startswith("`"):
            continue
        name = cells[0].strip("`")
        unit = cells[2].strip("`")
        attributes = frozenset(re.findall(r"`([a-z_.]+)`", cells[3]))
        rows[name] = MetricRow(name, cells[1], "" if unit == "—" else unit, attributes)
    return rows


def test_metric_names_match_the_code():
    """The metric tables list exactly the metric names the code defines, and the Prometheus names."""
    documented = set(telemetry_rows("Metrics")) | set(telemetry_rows("Other HTTP metrics"))
    assert documented == semconv_metric_names()
    text = (ROOT / "docs" / "telemetry.md").read_text()
    for key, value in vars(sc).items():
        if key.startswith(("PROM_", "ATTR_")):
            assert f"`{value}`" in text, key
    process = set(telemetry_rows("Process metrics"))
    assert process == set(_setup._PROCESS_METRICS)


def _emit_everything() -> Any:
    """Record every metric, span and log obskit emits in-process, with the FastAPI integration and the guard."""
    import asyncio
    import logging

    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse
    from fastapi.testclient import TestClient

    import obskit
    from obskit import metrics
    from obskit.testing import capture_telemetry

    users = metrics.counter("docs.users", attributes=["tier"], max_values=1)

    @obskit.preprocess(model="m", batch_size=lambda rows: len(rows))
    def featurize(rows: list[int]) -> list[int]:
        return rows

    @obskit.inference(model="m", version="2")
    def predict(rows: list[int]) -> list[int]:
        if not rows:
            raise ValueError("empty")
        logging.getLogger("docs").warning("predicted")
        return rows

    @obskit.stage("generate", model="m")
    async def generate() -> Any:
        for i in range(2):
            await asyncio.sleep(0)
            yield f"{i} "

    with capture_telemetry(system_metrics=True) as telemetry:
        app = FastAPI()

        @app.post("/predict/{model}")
        def route(model: str, rows: list[int]) -> list[int]:
            return predict(featurize(rows))

        @app.get("/stream")
        async def stream() -> StreamingResponse:
            return StreamingResponse(generate(), media_type="text/plain")

        client = TestClient(app, raise_server_exceptions=False)
        assert client.post("/predict/m", json=[1, 2]).status_code == 200
        assert client.post("/predict/m", json=[]).status_code == 500
        assert client.get("/stream").status_code == 200
        assert client.get("/nowhere").status_code == 404
        users.add(1, {"tier": "gold"})
        users.add(1, {"tier": "silver", "user.id": "u1"})  # overflow and a denied key
        data = telemetry.metric_reader.get_metrics_data()
        spans = telemetry.spans()
    points = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                keys = {k for p in metric.data.data_points for k in (p.attributes or {})}
                points[metric.name] = (metric.unit or "", keys, type(metric.data).__name__)
    return points, spans


@pytest.fixture(scope="module")
def emitted() -> Any:
    from obskit import _safety

    previous = _safety.set_reraise(True)
    try:
        return _emit_everything()
    finally:
        _safety.set_reraise(previous)


_KINDS = {"Histogram": {"histogram"}, "Sum": {"counter", "up-down counter"}, "Gauge": {"gauge"}}


def test_emitted_metrics_match_the_table(emitted: Any):
    """Every metric obskit emits is documented with its unit, kind and (a superset of) its attributes."""
    points, _spans = emitted
    rows = {**telemetry_rows("Metrics"), **telemetry_rows("Other HTTP metrics"), **telemetry_rows("Process metrics")}
    for name, (unit, keys, kind) in points.items():
        if name == "docs.users":
            continue
        assert name in rows, f"{name} is emitted but not documented"
        row = rows[name]
        assert row.unit == unit, f"{name}: documented unit {row.unit!r}, emitted {unit!r}"
        assert row.kind in _KINDS[kind], f"{name}: documented {row.kind}, emitted {kind}"
        assert keys <= row.attributes, f"{name}: undocumented attributes {keys - row.attributes}"
    for expected in (sc.METRIC_HTTP_SERVER_REQUEST_DURATION, sc.MODEL_TIME_TO_FIRST_OUTPUT, sc.CARDINALITY_OVERFLOW):
        assert expected in points


def test_emitted_spans_match_the_doc(emitted: Any):
    """Span names follow the documented patterns; every stage-span attribute is documented."""
    _points, spans = emitted
    text = (ROOT / "docs" / "telemetry.md").read_text()
    spans_section = text.split("## Spans\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([a-z_.]+)`", spans_section))
    names = sorted({s.name for s in spans})
    assert names == [
        "GET",
        "GET /stream",
        "POST /predict/{model}",
        "generate m",
        "inference m",
        "preprocess m",
    ]
    for span in spans:
        if span.kind.name == "INTERNAL":
            assert set(span.attributes or {}) <= documented, span.name
        for event in span.events:
            assert f"`{event.name}`" in spans_section
            assert set(event.attributes or {}) <= documented


# --------------------------------------------------------------------------------------------------------------
# deployment.md: the files mean what they say.


def _yaml_docs(page: str) -> list[Any]:
    return [doc for b in blocks(page) if b.language == "yaml" for doc in yaml.safe_load_all(b.text) if doc]


def test_collector_config_pipelines_are_wired():
    """The Collector config receives OTLP and sends metrics to Prometheus, traces to Tempo/Jaeger, logs to Loki."""
    [config] = [d for d in _yaml_docs("docs/deployment.md") if "receivers" in d and "service" in d]
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    for pipeline in pipelines.values():
        assert pipeline["receivers"] == ["otlp"]
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{component} is used but not defined"
    assert any(e.startswith("prometheus") for e in pipelines["metrics"]["exporters"])
    assert any(e.startswith("otlp") for e in pipelines["traces"]["exporters"])
    assert any("loki" in e for e in pipelines["logs"]["exporters"])
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")


def test_kubernetes_deployment_is_consistent():
    """Probes hit excluded URLs, OTEL_*/OBSKIT_* values are valid, and the grace period covers the flush."""
    [deployment] = [d for d in _yaml_docs("docs/deployment.md") if d.get("kind") == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert re.search(sc.DEFAULT_EXCLUDED_URLS, path), f"{probe} {path} is not excluded by default"
    env = {e["name"]: e for e in container["env"]}
    for name, entry in env.items():
        if name.startswith(("OTEL_", "OBSKIT_")):
            assert name in ENV_BY_NAME, name
            if "value" in entry and "$(" not in entry["value"]:
                ENV_BY_NAME[name].parse(entry["value"])
    assert {"OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_RESOURCE_ATTRIBUTES"} <= set(env)
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(env["OBSKIT_SHUTDOWN_TIMEOUT"]["value"])


def test_excluded_url_examples_hold():
    """Each row of configuration.md's excluded-URL table holds for a real FastAPI app: excluded or traced."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from obskit.testing import capture_telemetry

    text = (ROOT / "docs" / "configuration.md").read_text()
    section = text.split("## Excluded URLs\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) >= 4
    for line in rows:
        pattern, excluded, traced = (re.findall(r"`([^`]+)`", cell) for cell in line.strip("|").split("|"))
        with capture_telemetry(excluded_urls=pattern) as telemetry:
            app = FastAPI()

            @app.get("/{path:path}")
            def anything(path: str) -> dict[str, str]:
                return {"path": path}

            client = TestClient(app)
            for path in excluded + traced:
                telemetry.clear()
                assert client.get(path).status_code == 200
                spans = telemetry.spans()
                assert len(spans) == (path in traced), f"{pattern[0]!r} on {path!r}: {[s.name for s in spans]}"
