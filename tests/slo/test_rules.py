from __future__ import annotations

import re
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from obskit import _semconv as sc
from obskit.exceptions import ConfigError
from obskit.slo import load_slo_file
from obskit.slo._model import Matcher, parse_selector, parse_slo, promql_string
from obskit.slo._rules import (
    ALERT_NAME,
    BURN_ALERTS,
    RULE_WINDOWS,
    build_rules,
    good_ratio_query,
    le_matcher,
    le_values,
    render_rules,
    sli,
)

from . import _promtool

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PROMTOOL_DIR = HERE / "promtool"
PROMTOOL_TESTS = sorted(PROMTOOL_DIR.glob("*_test.yaml"))


def test_promtool_unit_tests_are_shipped() -> None:
    """The fast-burn, slow-burn and healthy rule tests are in the repo."""
    assert {p.name for p in PROMTOOL_TESTS} >= {"fast_burn_test.yaml", "slow_burn_test.yaml", "healthy_test.yaml"}


@pytest.mark.parametrize("test_file", PROMTOOL_TESTS, ids=lambda p: p.stem)
def test_promtool_rule_unit_tests(tmp_path: Path, test_file: Path) -> None:
    """Rules rendered from the test SLO file pass `promtool test rules` (fast burn pages, slow burn tickets...)."""
    slo = load_slo_file(PROMTOOL_DIR / "slo.yaml")
    (tmp_path / "rules.yaml").write_text(render_rules(slo))
    (tmp_path / "canary-rules.yaml").write_text(render_rules(slo, parse_selector('job="checkout-canary"')))
    shutil.copy(test_file, tmp_path / test_file.name)
    result = _promtool.run("test", "rules", test_file.name, cwd=tmp_path)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "SUCCESS" in result.stdout


def test_promtool_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """The shipped tests can fail: with the Go-style le spelling not matched, the healthy test fires alerts."""
    rules = render_rules(load_slo_file(PROMTOOL_DIR / "slo.yaml")).replace('le=~"1|1\\\\.0"', 'le="1.0"')
    assert 'le="1.0"' in rules
    (tmp_path / "rules.yaml").write_text(rules)
    shutil.copy(PROMTOOL_DIR / "healthy_test.yaml", tmp_path)
    result = _promtool.run("test", "rules", "healthy_test.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert 'slo_name="api-latency"' in result.stdout + result.stderr


@pytest.mark.parametrize(
    "slo_file", [ROOT / "examples" / "slo.yaml", PROMTOOL_DIR / "slo.yaml"], ids=["example", "test"]
)
def test_rendered_rules_pass_promtool_check(tmp_path: Path, slo_file: Path) -> None:
    """`promtool check rules` (with its duplicate-rule lint) accepts the rendered file."""
    path = tmp_path / "rules.yaml"
    path.write_text(render_rules(load_slo_file(slo_file)))
    slo = load_slo_file(slo_file)
    # 7 windows + objective + budget recording rules, and 2 alerts, per objective.
    assert f"SUCCESS: {len(slo.objectives) * 11} rules found" in _promtool.check_rules(path)


def test_varied_slo_files_pass_promtool_check(tmp_path: Path) -> None:
    """Odd but valid inputs (regex characters in routes, quotes, every bucket, no selector) still give valid rules."""
    objectives = [
        f"""  - name: lat-{i}
    type: latency
    threshold: {boundary}
    target: 99.95
    window: 28d
    routes: ["/items/{{item_id}}", "/a.b+c", '/q"uote', '/back\\\\slash']
"""
        for i, boundary in enumerate(sc.HTTP_DURATION_BUCKETS)
    ]
    objectives += [
        f"""  - name: model-{i}
    type: {kind}
    {"threshold: " + str(boundary) if kind == "latency" else ""}
    target: 90
    model: "llm \\"big\\""
    stage: tokenize
"""
        for i, boundary in enumerate(sc.MODEL_DURATION_BUCKETS)
        for kind in ["latency"] + (["availability"] if i == 0 else [])
    ]
    objectives.append("  - name: everything\n    type: availability\n    target: 50\n")
    text = "service: 'svc \"quoted\"'\nselector: ''\nobjectives:\n" + "".join(objectives)
    slo = parse_slo(text.replace("model-0\n    type: availability", "model-avail\n    type: availability"))
    path = tmp_path / "rules.yaml"
    path.write_text(render_rules(slo))
    assert f"SUCCESS: {len(slo.objectives) * 11} rules found" in _promtool.check_rules(path)


def test_rule_file_structure() -> None:
    """One group per objective: error-ratio recording rules for every window, objective and budget, page and ticket."""
    slo = load_slo_file(ROOT / "examples" / "slo.yaml")
    rules = build_rules(slo)
    assert [g["name"] for g in rules["groups"]] == [f"obskit-slo:iris-classifier:{o.name}" for o in slo.objectives]
    group = rules["groups"][0]["rules"]
    labels = {"slo_service": "iris-classifier", "slo_name": "predict-availability", "slo_type": "availability"}
    assert [r.get("record") for r in group[:9]] == [f"obskit:slo_error_ratio:rate{w}" for w in RULE_WINDOWS] + [
        "obskit:slo_objective:ratio",
        "obskit:slo_error_budget:ratio",
    ]
    assert RULE_WINDOWS == ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
    assert all(r["labels"] == labels for r in group[:9])
    assert group[7]["expr"] == "vector(0.999)"
    assert group[8]["expr"] == "vector(0.001)"
    page, ticket = group[9:]
    assert page["alert"] == ticket["alert"] == ALERT_NAME
    assert page["labels"] == {"severity": "page", **labels}
    assert ticket["labels"] == {"severity": "ticket", **labels}
    recorded = '{slo_service="iris-classifier",slo_name="predict-availability",slo_selector=""}'
    assert page["expr"] == (
        "(\n"
        f"  obskit:slo_error_ratio:rate1h{recorded} / 0.001 > 14.4\n"
        "and\n"
        f"  obskit:slo_error_ratio:rate5m{recorded} / 0.001 > 14.4\n"
        ")\n"
        "or\n"
        "(\n"
        f"  obskit:slo_error_ratio:rate6h{recorded} / 0.001 > 6\n"
        "and\n"
        f"  obskit:slo_error_ratio:rate30m{recorded} / 0.001 > 6\n"
        ")\n"
    )
    assert "rate1d" in ticket["expr"]
    assert "rate2h" in ticket["expr"]
    assert "> 3\n" in ticket["expr"]
    assert "rate3d" in ticket["expr"]
    assert "rate6h" in ticket["expr"]
    assert "> 1\n" in ticket["expr"]
    assert set(page["annotations"]) == {"summary", "description"}


def test_rendered_yaml_round_trips_with_header() -> None:
    """The text output is the dict, as YAML without anchors, under a generated-file comment."""
    slo = load_slo_file(ROOT / "examples" / "slo.yaml")
    text = render_rules(slo)
    assert text.startswith("# Generated by `obskit slo render` from ")
    assert "&id" not in text
    assert "*id" not in text
    assert yaml.safe_load(text) == build_rules(slo)


def test_burn_factors_for_30_and_28_days() -> None:
    """30 days gives the workbook's 14.4/6/3/1; 28 days the same budget shares (13.44/5.6/2.8/0.9333)."""
    assert [str(a.factor(30)) for a in BURN_ALERTS] == ["14.4000", "6.0000", "3.0000", "1.0000"]
    assert [str(a.factor(28)) for a in BURN_ALERTS] == ["13.4400", "5.6000", "2.8000", "0.9333"]
    assert [(a.severity, a.long, a.short) for a in BURN_ALERTS] == [
        ("page", "1h", "5m"),
        ("page", "6h", "30m"),
        ("ticket", "1d", "2h"),
        ("ticket", "3d", "6h"),
    ]
    assert sum(a.budget_spent for a in BURN_ALERTS) == Decimal("0.27")


def test_le_matcher_accepts_both_spellings() -> None:
    """Whole-number boundaries match 1 and 1.0 (Go Collector / Prometheus 2 vs Python exporter / Prometheus 3)."""
    assert le_values(1.0) == ("1", "1.0")
    assert le_values(10) == ("10", "10.0")
    assert le_values(0.25) == ("0.25",)
    assert le_values(0.001) == ("0.001",)
    assert str(le_matcher(1.0)) == 'le=~"1|1\\\\.0"'
    assert str(le_matcher(0.25)) == 'le=~"0\\\\.25"'
    for boundary in (*sc.HTTP_DURATION_BUCKETS, *sc.MODEL_DURATION_BUCKETS):
        regex = "|".join(re.escape(v) for v in le_values(boundary))
        assert re.fullmatch(regex, str(boundary))  # what prometheus_client prints for a float bound
        assert re.fullmatch(regex, f"{boundary:g}")  # what Go's strconv 'g' prints
        assert re.fullmatch(regex, str(int(boundary)) if boundary == int(boundary) else str(boundary))


def test_sli_queries() -> None:
    """The good-ratio PromQL for each SLI kind, with metric names from _semconv and the service selector."""
    slo = load_slo_file(ROOT / "examples" / "slo.yaml")
    selector = slo.selector
    by_name = {o.name: o for o in slo.objectives}
    assert good_ratio_query(by_name["predict-availability"], selector, "5m") == (
        f'(sum(rate({sc.PROM_HTTP_DURATION}_count{{job="iris-classifier",http_route="/predict",'
        'http_response_status_code!~"5..",error_type=""}[5m])) or vector(0)) / '
        f'sum(rate({sc.PROM_HTTP_DURATION}_count{{job="iris-classifier",http_route="/predict"}}[5m]))'
    )
    assert good_ratio_query(by_name["predict-latency"], selector, "1m") == (
        f'sum(rate({sc.PROM_HTTP_DURATION}_bucket{{job="iris-classifier",http_route="/predict",le=~"0\\\\.5"}}[1m])) / '
        f'sum(rate({sc.PROM_HTTP_DURATION}_count{{job="iris-classifier",http_route="/predict"}}[1m]))'
    )
    assert good_ratio_query(by_name["inference-availability"], selector, "5m") == (
        f'(sum(rate({sc.PROM_MODEL_DURATION}_count{{job="iris-classifier",model_name="iris-centroid",'
        'model_stage="inference",error_type=""}[5m])) or vector(0)) / '
        f'sum(rate({sc.PROM_MODEL_DURATION}_count{{job="iris-classifier",model_name="iris-centroid",'
        'model_stage="inference"}[5m]))'
    )
    assert good_ratio_query(by_name["inference-latency"], [], "5m") == (
        f'sum(rate({sc.PROM_MODEL_DURATION}_bucket{{model_name="iris-centroid",model_stage="inference",'
        'le=~"0\\\\.25"}[5m])) / '
        f'sum(rate({sc.PROM_MODEL_DURATION}_count{{model_name="iris-centroid",model_stage="inference"}}[5m]))'
    )
    # Several routes become one anchored regex with metacharacters escaped.
    multi = parse_slo("service: s\nobjectives: [{name: a, type: availability, target: 99, routes: ['/a', '/b/{id}']}]")
    assert 'http_route=~"/a|/b/\\\\{id\\\\}"' in sli(multi.objectives[0], ()).total


def test_selector_override_in_rules() -> None:
    """--selector replaces the file's job matcher and adds new labels, in every rule."""
    slo = load_slo_file(ROOT / "examples" / "slo.yaml")
    text = render_rules(slo, parse_selector('job="canary",namespace="prod"'))
    assert 'job="iris-classifier"' not in text
    assert text.count('{job="canary",namespace="prod",') == len(slo.objectives) * 7 * 2
    assert render_rules(slo, [Matcher("job", "=", '"iris-classifier"')]) == render_rules(slo)


# Selectors Prometheus rejects (checked below with promtool) and odd ones it accepts.
BAD_SELECTORS = [
    ('job=~"("', "the regex does not compile: missing ), unterminated subpattern"),
    ('job="\\q"', "unknown escape sequence \\q"),
    ('job="a\nb"', "a raw newline inside the quotes"),
    ('job=~"(a)\\\\1"', "'\\\\1' is not supported by RE2"),
    ('job=~"(?=a)b"', "'(?=' is not supported by RE2"),
    ('job="\\x4"', "\\x needs 2 hex digits"),
    ('job="it\\\'s"', "unknown escape sequence \\'"),
    ('job="\\uD800"', "\\uD800 is not a valid character"),
]
GOOD_SELECTORS = ['job=~"a{2}|b(c|d)*"', 'job="\\u00e9\\"\\t\\x41\\101"', "job='it\\'s'", "job=`raw\\d+`", 'job!~"x.+"']


@pytest.mark.parametrize(("selector", "problem"), BAD_SELECTORS, ids=[s for s, _ in BAD_SELECTORS])
def test_invalid_selectors_are_config_errors_and_promtool_agrees(tmp_path: Path, selector: str, problem: str) -> None:
    """Each rejected selector names the option and value; unvalidated, it would make promtool fail the file."""
    with pytest.raises(ConfigError) as caught:
        parse_selector(selector, what="--selector")
    message = str(caught.value)
    assert message.startswith(f"--selector {selector!r}: the value ")
    assert problem in message
    assert 'expected comma-separated label="value" matchers (=, !=, =~, !~)' in message
    # Bypass the validation: the rule file it would have rendered is one promtool rejects.
    label, op, value = re.fullmatch(r"(\w+)(=~|!~|!=|=)(.*)", selector, re.S).groups()  # type: ignore[union-attr]
    slo = parse_slo("service: s\nobjectives: [{name: a, type: availability, target: 99}]\n")
    path = tmp_path / "rules.yaml"
    path.write_text(render_rules(slo, [Matcher(label, op, value)]))
    assert _promtool.run("check", "rules", path).returncode != 0


def test_odd_but_valid_selectors_pass_promtool(tmp_path: Path) -> None:
    """Escapes, single quotes, raw strings and RE2 repetition are accepted, and promtool accepts the result."""
    slo = parse_slo("service: s\nobjectives: [{name: a, type: availability, target: 99}]\n")
    for index, selector in enumerate(GOOD_SELECTORS):
        path = tmp_path / f"rules-{index}.yaml"
        path.write_text(render_rules(slo, parse_selector(selector)))
        assert "SUCCESS: 11 rules found" in _promtool.check_rules(path), selector


def test_selectors_give_distinct_series_and_alerts() -> None:
    """Rules for the default selector and for a canary's record and alert on different label sets."""
    slo = load_slo_file(ROOT / "examples" / "slo.yaml")
    main, canary = build_rules(slo), build_rules(slo, parse_selector('job="canary"'))
    for m_group, c_group in zip(main["groups"], canary["groups"], strict=True):
        assert c_group["name"] == m_group["name"] + ':{job="canary"}'
        for m_rule, c_rule in zip(m_group["rules"], c_group["rules"], strict=True):
            assert c_rule["labels"] == {**m_rule["labels"], "slo_selector": 'job="canary"'}
            assert "slo_selector" not in m_rule["labels"]
    page = canary["groups"][0]["rules"][9]
    assert page["alert"] == ALERT_NAME
    assert page["expr"].count(',slo_selector="job=\\"canary\\""}') == 4
    assert main["groups"][0]["rules"][9]["expr"].count(',slo_selector=""}') == 4
    assert page["annotations"]["summary"] == (
        'iris-classifier {job="canary"} predict-availability: error budget burning fast'
    )
    # A file's own selector counts as non-default too; the default spelled out does not.
    own = parse_slo("service: s\nselector: 'job=\"shop/s\"'\nobjectives: [{name: a, type: availability, target: 99}]\n")
    assert build_rules(own)["groups"][0]["rules"][0]["labels"]["slo_selector"] == 'job="shop/s"'
    assert build_rules(slo, parse_selector('job="iris-classifier"')) == main
    assert 'slo_selector="job=\\"canary\\""' in render_rules(slo, parse_selector('job="canary"')).splitlines()[2]


def test_user_text_renders_literally_in_alerts(tmp_path: Path) -> None:
    """Go template syntax in the service, a description or a route is escaped: promtool accepts the file, and
    the alerts' labels and annotations show the text as written."""
    service = 'svc {{ "x" }'
    slo = parse_slo(
        yaml.safe_dump(
            {
                "service": service,
                "objectives": [
                    {"name": "a", "type": "availability", "target": 99.9, "routes": ["/items/{{item_id}}"]},
                    {"name": "b", "type": "availability", "target": 99.9, "description": "Use {{ $labels.job }}; {{"},
                ],
            }
        )
    )
    (tmp_path / "rules.yaml").write_text(render_rules(slo))
    assert "SUCCESS: 22 rules found" in _promtool.check_rules(tmp_path / "rules.yaml")
    failing = f"{{job={promql_string(service)},http_route={promql_string('/items/{{item_id}}')},"
    failing += 'http_response_status_code="500"}'
    speeds = {"page": "fast", "ticket": "slowly"}
    conditions = {"page": "1h/5m above 14.4x or 6h/30m above 6x", "ticket": "1d/2h above 3x or 3d/6h above 1x"}
    whats = {"a": "availability of routes /items/{{item_id}}", "b": "Use {{ $labels.job }}; {{"}
    expected = [
        {
            "exp_labels": {"severity": sev, "slo_service": service, "slo_name": name, "slo_type": "availability"},
            "exp_annotations": {
                "summary": f"{service} {name}: error budget burning {speeds[sev]}",
                "description": f"{whats[name]}: the 99.9% 30d objective's error budget is being spent at 1000.00x "
                f"the sustainable rate ({conditions[sev]}).",
            },
        }
        for name in ("a", "b")
        for sev in ("page", "ticket")
    ]
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f"http_server_request_duration_seconds_count{failing}", "values": "0+10x90"}
                ],
                "alert_rule_test": [{"eval_time": "70m", "alertname": ALERT_NAME, "exp_alerts": expected}],
            }
        ],
    }
    (tmp_path / "tmpl_test.yaml").write_text(yaml.safe_dump(test))
    result = _promtool.run("test", "rules", "tmpl_test.yaml", cwd=tmp_path)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
