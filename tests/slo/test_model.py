from __future__ import annotations

from pathlib import Path

import pytest

from obskit.exceptions import ConfigError
from obskit.slo import Matcher, Objective, SLOFile, load_slo_file
from obskit.slo._model import merge_selectors, parse_duration, parse_selector, parse_slo

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
service: fraud-scorer
objectives:
  - name: api
    type: availability
    target: 99.9
    routes: ["/predict", "/score"]
  - name: slow
    type: latency
    threshold: 0.25
    target: 99
    window: 28d
    model: fraud-xgb
    stage: inference
"""


def load_text(tmp_path: Path, text: str) -> SLOFile:
    path = tmp_path / "slo.yaml"
    path.write_text(text)
    return load_slo_file(path)


def problems(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    return str(info.value)


def test_valid_file_becomes_frozen_dataclasses(tmp_path: Path) -> None:
    """A valid file is parsed into SLOFile/Objective with defaults filled in and job="<service>" as selector."""
    slo = load_text(tmp_path, GOOD)
    assert slo == SLOFile(
        service="fraud-scorer",
        objectives=(
            Objective(name="api", type="availability", target=99.9, window="30d", routes=("/predict", "/score")),
            Objective(
                name="slow", type="latency", target=99.0, window="28d", threshold=0.25, model="fraud-xgb",
                stage="inference",
            ),
        ),
        selector=(Matcher("job", "=", '"fraud-scorer"'),),
        source=str(tmp_path / "slo.yaml"),
    )  # fmt: skip
    with pytest.raises(AttributeError):
        slo.objectives[0].target = 50  # type: ignore[misc]
    assert str(slo.objectives[0].error_budget) == "0.001"
    assert str(slo.objectives[1].objective_ratio) == "0.99"
    assert slo.objectives[1].scope == "model"
    assert slo.objectives[0].scope == "http"


def test_example_file_is_valid() -> None:
    """examples/slo.yaml validates and covers both SLI types and both scopes."""
    slo = load_slo_file(ROOT / "examples" / "slo.yaml")
    assert slo.service == "iris-classifier"
    assert {(o.type, o.scope) for o in slo.objectives} == {
        ("availability", "http"),
        ("latency", "http"),
        ("availability", "model"),
        ("latency", "model"),
    }


def test_selector_key_replaces_the_job_default(tmp_path: Path) -> None:
    """A top-level selector replaces job="<service>"; an empty one selects every series."""
    slo = load_text(tmp_path, GOOD.replace("service: fraud-scorer", "service: x\nselector: '{namespace=~\"prod-.*\"}'"))
    assert slo.selector == (Matcher("namespace", "=~", '"prod-.*"'),)
    slo = load_text(tmp_path, GOOD.replace("service: fraud-scorer", "service: x\nselector: ''"))
    assert slo.selector == ()


def test_model_threshold_must_be_a_model_bucket(tmp_path: Path) -> None:
    """60s is a boundary of obskit.model.duration but not of http.server.request.duration."""
    model = GOOD.replace("threshold: 0.25", "threshold: 60")
    assert load_text(tmp_path, model).objectives[1].threshold == 60.0
    http = GOOD.replace("type: availability", "type: latency\n    threshold: 60")
    message = problems(tmp_path, http)
    assert "objectives[0].threshold: 60s is not a bucket boundary of http.server.request.duration" in message
    assert "nearest boundaries: 10" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("target: 99.9", "target: 100"), "objectives[0].target: 100 is outside (0, 100); expected a "
         "percentage strictly between 0 and 100, e.g. 99.9"),
        (GOOD.replace("target: 99.9", "target: 0"), "objectives[0].target: 0 is outside (0, 100)"),
        (GOOD.replace("target: 99.9", "target: -5"), "objectives[0].target: -5 is outside (0, 100)"),
        (GOOD.replace("target: 99.9", "target: '99.9'"), "objectives[0].target: '99.9' is not a number; expected a "
         "percentage strictly between 0 and 100"),
        (GOOD.replace("target: 99.9", "target: true"), "objectives[0].target: True is not a number"),
        (GOOD.replace("    target: 99.9\n", ""), "objectives[0].target: missing; expected a percentage"),
        (GOOD.replace("window: 28d", "window: 7d"), "objectives[1].window: '7d' is not accepted; expected one of "
         "'28d', '30d'"),
        (GOOD.replace("window: 28d", "window: [28d]"), "objectives[1].window: ['28d'] is not accepted"),
        (GOOD.replace("type: availability", "type: [latency]"), "objectives[0].type: ['latency'] is not accepted"),
        (GOOD.replace("type: availability", "type: throughput"), "objectives[0].type: 'throughput' is not "
         "accepted; expected one of 'availability', 'latency'"),
        (GOOD.replace("    type: availability\n", ""), "objectives[0].type: missing; expected one of "
         "'availability', 'latency'"),
        (GOOD.replace("  - name: api\n", "  - nmae: api\n"), "objectives[0].nmae: unknown key; accepted keys: name, "
         "description, type, target, window, threshold, routes, model, stage"),
        (GOOD.replace("  - name: api\n", "  - nmae: api\n"), "objectives[0].name: missing; expected a non-empty "
         "string"),
        (GOOD.replace("service: fraud-scorer", "service: fraud-scorer\nservce: x"), "servce: unknown key; accepted "
         "keys: service, selector, objectives"),
        (GOOD.replace("service: fraud-scorer", "service: 12"), "service: 12 is not a non-empty string"),
        (GOOD.replace("service: fraud-scorer\n", ""), "service: missing; expected a non-empty string"),
        (GOOD.replace("name: slow", "name: api"), "objectives[1].name: 'api' is already used by objectives[0]; "
         "expected a unique name"),
        (GOOD.replace("name: slow", "name: 'has space'"), "objectives[1].name: 'has space' is not accepted"),
        (GOOD.replace('routes: ["/predict", "/score"]', 'routes: ["/predict"]\n    model: m\n    stage: inference'),
         "objectives[0]: has both 'routes' and 'model'/'stage'; expected either routes (an HTTP SLI) or model and "
         "stage (a model stage SLI)"),
        (GOOD.replace("    stage: inference\n", ""), "objectives[1].stage: missing; 'model' needs 'stage'"),
        (GOOD.replace("    model: fraud-xgb\n", ""), "objectives[1].model: missing; 'stage' needs 'model'"),
        (GOOD.replace('routes: ["/predict", "/score"]', "routes: []"), "objectives[0].routes: [] is not a non-empty "
         "list; expected route templates such as ['/predict']"),
        (GOOD.replace('routes: ["/predict", "/score"]', 'routes: ["/predict", 3]'), "objectives[0].routes[1]: 3 is "
         "not a non-empty string"),
        (GOOD.replace("threshold: 0.25", "threshold: 0.3"), "objectives[1].threshold: 0.3s is not a bucket boundary "
         "of obskit.model.duration, so the SLI cannot be read from the histogram; nearest boundaries: 0.25 and 0.5 "
         "(all: 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30, 60)"),
        (GOOD.replace("threshold: 0.25", "threshold: 100"), "objectives[1].threshold: 100s is not a bucket boundary "
         "of obskit.model.duration, so the SLI cannot be read from the histogram; nearest boundaries: 60 "),
        (GOOD.replace("threshold: 0.25", "threshold: fast"), "objectives[1].threshold: 'fast' is not a positive "
         "number of seconds; expected one of the obskit.model.duration bucket boundaries"),
        (GOOD.replace("    threshold: 0.25\n", ""), "objectives[1].threshold: missing; latency objectives need a "
         "threshold in seconds"),
        (GOOD.replace("type: availability", "type: availability\n    threshold: 0.5"), "objectives[0].threshold: "
         "only latency objectives take a threshold"),
        (GOOD.replace("service: fraud-scorer", "service: x\nselector: 'job=fraud'"), "selector 'job=fraud': not a "
         "list of PromQL label matchers"),
        ("service: x\nobjectives: []\n", "objectives: [] is not a non-empty list; expected a list of objectives"),
        ("service: x\n", "objectives: missing; expected a non-empty list of objectives"),
        ("service: x\nobjectives: [3]\n", "objectives[0]: 3 is not a mapping; expected keys name, description"),
    ],
)  # fmt: skip
def test_bad_file_names_the_path_and_what_is_accepted(tmp_path: Path, text: str, expected: str) -> None:
    """Each invalid file raises ConfigError naming the file, the path inside it and the accepted values."""
    message = problems(tmp_path, text)
    assert message.startswith(f"SLO file {tmp_path / 'slo.yaml'}: ")
    assert expected in message


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    """Several mistakes in one file are all listed, one per line, with a count."""
    text = GOOD.replace("target: 99.9", "target: 150").replace("window: 28d", "window: 1y")
    message = problems(tmp_path, text)
    assert message.splitlines() == [
        f"SLO file {tmp_path / 'slo.yaml'}: 2 problems",
        "  objectives[0].target: 150 is outside (0, 100); expected a percentage strictly between 0 and 100, e.g. 99.9",
        "  objectives[1].window: '1y' is not accepted; expected one of '28d', '30d'",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the document is empty; expected a mapping with keys service, selector, objectives"),
        ("- a\n- b\n", "the document is a list; expected a mapping"),
        ("service: [unclosed\n", "not valid YAML at line 2, column 1"),
    ],
)
def test_unreadable_documents(tmp_path: Path, text: str, expected: str) -> None:
    """Empty, non-mapping and malformed YAML documents are ConfigErrors naming the file."""
    message = problems(tmp_path, text)
    assert message.startswith(f"SLO file {tmp_path / 'slo.yaml'}: ")
    assert expected in message


def test_missing_file(tmp_path: Path) -> None:
    """A file that does not exist is a ConfigError with its path and the OS reason."""
    with pytest.raises(ConfigError, match=r"SLO file .*nope\.yaml: cannot be read \(No such file or directory\)"):
        load_slo_file(tmp_path / "nope.yaml")


def test_yaml_is_loaded_safely() -> None:
    """Python-object tags are rejected (yaml.safe_load), not executed."""
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_slo("service: !!python/object/apply:os.getcwd []\nobjectives: []\n")


def test_selector_parsing_and_merging() -> None:
    """Selectors parse with or without braces and all four operators; overrides replace matchers per label."""
    assert parse_selector('{job="a", env=~"prod.*",team!="x",  zone!~\'eu-.*\'}') == (
        Matcher("job", "=", '"a"'),
        Matcher("env", "=~", '"prod.*"'),
        Matcher("team", "!=", '"x"'),
        Matcher("zone", "!~", "'eu-.*'"),
    )
    assert parse_selector("") == ()
    assert parse_selector('job="a\\"b"') == (Matcher("job", "=", '"a\\"b"'),)
    base = parse_selector('job="svc",namespace="prod"')
    assert merge_selectors(base, parse_selector('job="canary",track="canary"')) == (
        Matcher("namespace", "=", '"prod"'),
        Matcher("job", "=", '"canary"'),
        Matcher("track", "=", '"canary"'),
    )
    for bad in ("job", 'job="a" env="b"', "job=a", '1job="a"', 'job=="a"'):
        with pytest.raises(ConfigError, match=r'--selector .*expected comma-separated label="value" matchers'):
            parse_selector(bad, what="--selector")


def test_durations() -> None:
    """PromQL durations are accepted as written; anything else names the option."""
    assert [parse_duration(d) for d in ("5m", "30s", "1h30m", "250ms", "2d")] == ["5m", "30s", "1h30m", "250ms", "2d"]
    for bad in ("5", "m", "0m", "5 minutes", "-5m", ""):
        with pytest.raises(ConfigError, match=r"--window .*: not a PromQL duration"):
            parse_duration(bad)


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    """A file that is not UTF-8 (Latin-1, UTF-16, binary) is a ConfigError naming the file, not a traceback."""
    path = tmp_path / "slo.yaml"
    path.write_bytes("service: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_slo_file(path)
    assert str(caught.value) == (
        f"SLO file {path}: not UTF-8 text (byte 0xe9 at offset 12); expected a YAML file saved as UTF-8"
    )


@pytest.mark.parametrize(("target", "hint"), [(0.999, "did you mean 99.9? "), (0.5, "did you mean 50? "), (1, "")])
def test_ratio_targets_are_rejected(tmp_path: Path, target: float, hint: str) -> None:
    """A target of 1 or less is a ratio written where a percentage belongs (0.999 would be a 0.999% SLO)."""
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, GOOD.replace("target: 99.9", f"target: {target}"))
    assert f"  objectives[0].target: {target:g} looks like a ratio, but targets are percentages; {hint}" in str(
        caught.value
    )
    assert "expected a percentage above 1 and below 100, e.g. 99.9 for 99.9%" in str(caught.value)
    assert load_text(tmp_path, GOOD.replace("target: 99.9", "target: 1.5")).objectives[0].target == 1.5


def test_file_selector_is_validated(tmp_path: Path) -> None:
    """The file's selector key gets the same checks as --selector, reported under its key."""
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, GOOD.replace("service: fraud-scorer", "service: x\nselector: 'job=~\"(\"'"))
    assert '  selector \'job=~"("\': the value "(" of job: the regex does not compile' in str(caught.value)
