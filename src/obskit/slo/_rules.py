"""PromQL for the SLIs, and the Prometheus rule file: recording rules plus multi-window multi-burn-rate alerts.

One builder (``SLI``) produces every query: the recording rules, the gate, the Argo AnalysisTemplate and the
dashboard's SLO panels all read the same text, so what CI gates on is what the pager alerts on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import yaml

from .. import _semconv as sc
from ._model import Matcher, Objective, SLOFile, merge_selectors, number_text, promql_string

# Windows the error ratio is recorded over: the short and long windows of the burn-rate alerts below.
RULE_WINDOWS: Final = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
_HOURS: Final = {w: Decimal(h) for w, h in (("1h", 1), ("2h", 2), ("6h", 6), ("1d", 24), ("3d", 72))}

RECORD_ERROR_RATIO: Final = "obskit:slo_error_ratio:rate{window}"
RECORD_OBJECTIVE: Final = "obskit:slo_objective:ratio"
RECORD_ERROR_BUDGET: Final = "obskit:slo_error_budget:ratio"
ALERT_NAME: Final = "SLOErrorBudgetBurn"
LABEL_SERVICE: Final = "slo_service"
LABEL_NAME: Final = "slo_name"
LABEL_TYPE: Final = "slo_type"
# Set only when the rules select something other than the default job="<service>" (a canary, a file's own
# selector): rules rendered for two selectors then record and alert on distinct series in one Prometheus.
LABEL_SELECTOR: Final = "slo_selector"

# Prometheus names of the attributes the SLIs filter on (OpenTelemetry-to-Prometheus translation: dots
# become underscores). Derived from _semconv so a rename there cannot silently break the PromQL.
PROM_ROUTE: Final = sc.ATTR_HTTP_ROUTE.replace(".", "_")
PROM_STATUS: Final = sc.ATTR_HTTP_RESPONSE_STATUS_CODE.replace(".", "_")
PROM_ERROR_TYPE: Final = sc.ATTR_ERROR_TYPE.replace(".", "_")
PROM_MODEL_NAME: Final = sc.ATTR_MODEL_NAME.replace(".", "_")
PROM_MODEL_STAGE: Final = sc.ATTR_MODEL_STAGE.replace(".", "_")


@dataclass(frozen=True, slots=True)
class BurnAlert:
    """One window pair of the multi-window multi-burn-rate alerts (SRE workbook, chapter 5, table 5-8)."""

    severity: str
    long: str
    short: str
    budget_spent: Decimal  # fraction of the whole period's budget that the long window may consume

    def factor(self, window_days: int) -> Decimal:
        """Burn-rate threshold: budget_spent x period / long window (14.4 for 2% of a 30-day budget in 1h)."""
        return (self.budget_spent * window_days * 24 / _HOURS[self.long]).quantize(Decimal("0.0001"))


# The workbook's factors are for a 30-day period; for 28 days the same budget fractions give 13.44, 5.6,
# 2.8 and 0.9333, i.e. each alert still fires when the same share of the budget has been spent.
BURN_ALERTS: Final = (
    BurnAlert("page", "1h", "5m", Decimal("0.02")),
    BurnAlert("page", "6h", "30m", Decimal("0.05")),
    BurnAlert("ticket", "1d", "2h", Decimal("0.10")),
    BurnAlert("ticket", "3d", "6h", Decimal("0.10")),
)


def number(value: Decimal | float) -> str:
    """Plain decimal text for PromQL (``0.001``, ``14.4``), never scientific notation."""
    return number_text(Decimal(repr(value)) if isinstance(value, float) else value)


def template_literal(text: str) -> str:
    """``text`` made inert for Prometheus' Go templates (alert labels and annotations are expanded as templates).

    Only ``{{`` opens an action, so each one is replaced by an action that prints it: ``{{ "{{" }}``.
    """
    return text.replace("{{", '{{ "{{" }}')


def regex_escape(text: str) -> str:
    """Escape RE2 metacharacters so ``text`` matches literally inside a PromQL ``=~`` matcher."""
    return re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", text)


def le_values(boundary: float) -> tuple[str, ...]:
    """How exporters spell a bucket boundary in the ``le`` label.

    The Python Prometheus exporter (and Prometheus 3, which normalises on scrape) write ``1.0``; the
    OpenTelemetry Collector's Go exporter (and Prometheus 2 storing it verbatim) write ``1``.
    """
    python = repr(float(boundary))
    go = python[:-2] if python.endswith(".0") else python
    return tuple(sorted({python, go}, key=len))


def le_matcher(boundary: float) -> Matcher:
    r"""``le=~"1|1\\.0"``: matches the boundary however the exporter spelled it."""
    return Matcher("le", "=~", promql_string("|".join(regex_escape(v) for v in le_values(boundary))))


def series(metric: str, matchers: Sequence[Matcher]) -> str:
    """``metric{a="b",c=~"d"}``."""
    return metric + "{" + ",".join(str(m) for m in matchers) + "}"


def _equals(label: str, values: Sequence[str]) -> Matcher:
    if len(values) == 1:
        return Matcher(label, "=", promql_string(values[0]))
    return Matcher(label, "=~", promql_string("|".join(regex_escape(v) for v in values)))


@dataclass(frozen=True, slots=True)
class SLI:
    """A ratio of good events to all events, both read from counters (``good`` and ``total`` series selectors).

    ``zero_when_no_good``: an absent good series means 0 good events (availability: no successful request was
    ever seen); for latency an absent bucket means the threshold is not a boundary there, which must read as
    "no data" rather than as a 100% miss that pages someone.
    """

    good: str
    total: str
    zero_when_no_good: bool

    def good_ratio(self, window: str, by: Sequence[str] = ()) -> str:
        """PromQL for the fraction of good events over ``window``, optionally per ``by`` labels."""
        grouping = f" by ({', '.join(by)}) " if by else ""
        good = f"sum{grouping}(rate({self.good}[{window}]))"
        total = f"sum{grouping}(rate({self.total}[{window}]))"
        if self.zero_when_no_good:
            fallback = f"0 * {total}" if by else "vector(0)"
            good = f"({good} or {fallback})"
        return f"{good} / {total}"

    def error_ratio(self, window: str, by: Sequence[str] = ()) -> str:
        """PromQL for the fraction of bad events (errors, or requests slower than the threshold)."""
        return f"1 - ({self.good_ratio(window, by)})"


def http_sli(selector: Sequence[Matcher], routes: Sequence[str] = (), threshold: float | None = None) -> SLI:
    """HTTP SLI from ``http.server.request.duration``: availability, or latency when ``threshold`` is given.

    Availability reads the histogram's ``_count``: good means not a 5xx and no ``error.type`` (an exception),
    so every request counts once whatever combination of the two it carries.
    """
    scope = [*selector, _equals(PROM_ROUTE, routes)] if routes else list(selector)
    good = [Matcher(PROM_STATUS, "!~", '"5.."'), Matcher(PROM_ERROR_TYPE, "=", '""')]
    return _sli(sc.PROM_HTTP_DURATION, scope, good, threshold)


def model_sli(
    selector: Sequence[Matcher], model: str | None = None, stage: str | None = None, threshold: float | None = None
) -> SLI:
    """Model stage SLI from ``obskit.model.duration``: good means no ``error.type`` (or at most ``threshold``)."""
    scope = list(selector)
    if model is not None:
        scope.append(_equals(PROM_MODEL_NAME, [model]))
    if stage is not None:
        scope.append(_equals(PROM_MODEL_STAGE, [stage]))
    return _sli(sc.PROM_MODEL_DURATION, scope, [Matcher(PROM_ERROR_TYPE, "=", '""')], threshold)


def _sli(metric: str, scope: list[Matcher], good: list[Matcher], threshold: float | None) -> SLI:
    total = series(f"{metric}_count", scope)
    if threshold is not None:
        return SLI(series(f"{metric}_bucket", [*scope, le_matcher(threshold)]), total, False)
    return SLI(series(f"{metric}_count", scope + good), total, True)


def sli(objective: Objective, selector: Sequence[Matcher]) -> SLI:
    """The SLI of ``objective`` for the series selected by ``selector``."""
    threshold = objective.threshold if objective.type == "latency" else None
    if objective.scope == "model":
        return model_sli(selector, objective.model, objective.stage, threshold)
    return http_sli(selector, objective.routes, threshold)


def effective_selector(slo: SLOFile, override: Sequence[Matcher] = ()) -> tuple[Matcher, ...]:
    """The file's service selector with ``override`` matchers replacing those on the same labels."""
    return merge_selectors(slo.selector, override)


def selector_text(selector: Sequence[Matcher]) -> str:
    """``job="canary",track="a"``: the matchers as written in PromQL, without braces."""
    return ",".join(str(m) for m in selector)


def selector_label(slo: SLOFile, selector: Sequence[Matcher]) -> str | None:
    """The ``slo_selector`` label value for ``selector``, or ``None`` for the default ``job="<service>"``."""
    default = (Matcher("job", "=", promql_string(slo.service)),)
    return None if tuple(selector) == default else selector_text(selector)


def good_ratio_query(objective: Objective, selector: Sequence[Matcher], window: str) -> str:
    """The query the gate evaluates and the AnalysisTemplate runs: good ratio over ``window`` (0 to 1)."""
    return sli(objective, selector).good_ratio(window)


def slo_labels(slo: SLOFile, objective: Objective, selector: Sequence[Matcher] | None = None) -> dict[str, str]:
    """The labels of an objective's recorded series and alerts; ``slo_selector`` too for a non-default selector."""
    labels = {LABEL_SERVICE: slo.service, LABEL_NAME: objective.name, LABEL_TYPE: objective.type}
    selected = selector_label(slo, slo.selector if selector is None else selector)
    if selected is not None:
        labels[LABEL_SELECTOR] = selected
    return labels


def _recorded(window: str, labels: dict[str, str]) -> str:
    matchers = [Matcher(k, "=", promql_string(v)) for k, v in labels.items() if k != LABEL_TYPE]
    if LABEL_SELECTOR not in labels:
        # The default rules must not also read the series recorded for another selector (a canary's).
        matchers.append(Matcher(LABEL_SELECTOR, "=", '""'))
    return series(RECORD_ERROR_RATIO.format(window=window), matchers)


class _Block(str):
    """A string dumped as a YAML literal block (``|``), for multi-line PromQL."""


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # shared label dicts are written out in full; anchors confuse readers and some tools


def _block(dumper: yaml.SafeDumper, data: _Block) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style="|")


_Dumper.add_representer(_Block, _block)


def dump_yaml(data: Any, header: str) -> str:
    """YAML with multi-line strings as literal blocks, keys in insertion order, and a comment header."""
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1_000_000)
    return "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + body


def _alert(slo: SLOFile, objective: Objective, severity: str, labels: dict[str, str]) -> dict[str, Any]:
    budget = number(objective.error_budget)
    pairs = [a for a in BURN_ALERTS if a.severity == severity]
    clauses = []
    conditions = []
    for pair in pairs:
        factor = number(pair.factor(objective.window_days))
        clauses.append(
            "(\n"
            f"  {_recorded(pair.long, labels)} / {budget} > {factor}\n"
            "and\n"
            f"  {_recorded(pair.short, labels)} / {budget} > {factor}\n"
            ")"
        )
        conditions.append(f"{pair.long}/{pair.short} above {factor}x")
    what = objective.description or f"{objective.type} of {objective.describe_scope()}"
    speed = "fast" if severity == "page" else "slowly"
    selected = f" {{{labels[LABEL_SELECTOR]}}}" if LABEL_SELECTOR in labels else ""
    return {
        "alert": ALERT_NAME,
        "expr": _Block("\nor\n".join(clauses) + "\n"),
        # The objective's labels are repeated here (the expression carries them too) so that each alert
        # rule is distinct to `promtool check rules`' duplicate-rule lint. Prometheus expands alert labels
        # and annotations as Go templates: user text is escaped so that a "{{" in it stays literal.
        "labels": {"severity": severity, **{k: template_literal(v) for k, v in labels.items()}},
        "annotations": {
            "summary": template_literal(f"{slo.service}{selected} {objective.name}: error budget burning {speed}"),
            "description": (
                template_literal(
                    f"{what}: the {number(Decimal(repr(objective.target)))}% {objective.window} objective's error "
                )
                # printf, not humanize: humanize writes a burn rate of 0.95 as "950m".
                + 'budget is being spent at {{ printf "%.2f" $value }}x the sustainable rate '
                f"({' or '.join(conditions)})."
            ),
        },
    }


def build_rules(slo: SLOFile, override: Sequence[Matcher] = ()) -> dict[str, Any]:
    """The rule file as a dict: one group per objective, recording rules first, then its two alerts."""
    selector = effective_selector(slo, override)
    selected = selector_label(slo, selector)
    groups = []
    for objective in slo.objectives:
        labels = slo_labels(slo, objective, selector)
        indicator = sli(objective, selector)
        rules: list[dict[str, Any]] = [
            {"record": RECORD_ERROR_RATIO.format(window=w), "expr": indicator.error_ratio(w), "labels": labels}
            for w in RULE_WINDOWS
        ]
        rules.append(
            {"record": RECORD_OBJECTIVE, "expr": f"vector({number(objective.objective_ratio)})", "labels": labels}
        )
        rules.append(
            {"record": RECORD_ERROR_BUDGET, "expr": f"vector({number(objective.error_budget)})", "labels": labels}
        )
        rules += [_alert(slo, objective, severity, labels) for severity in ("page", "ticket")]
        name = f"obskit-slo:{slo.service}:{objective.name}" + (f":{{{selected}}}" if selected is not None else "")
        groups.append({"name": name, "rules": rules})
    return {"groups": groups}


def render_rules(slo: SLOFile, override: Sequence[Matcher] = ()) -> str:
    """The Prometheus rule file for ``slo`` as YAML text (``obskit slo render``)."""
    selector = effective_selector(slo, override)
    matchers = selector_text(selector)
    selected = f"series selected by {{{matchers}}}" if matchers else "every series (empty selector)"
    label = selector_label(slo, selector)
    distinct = (
        f"Recorded series and alerts carry {LABEL_SELECTOR}={promql_string(label)} (not the default selector).\n"
        if label is not None
        else ""
    )
    header = (
        f"Generated by `obskit slo render` from {slo.source}; do not edit, re-render.\n"
        f"Service {slo.service}, {selected}.\n"
        f"{distinct}"
        "Alerts: multi-window multi-burn-rate (Google SRE workbook, ch. 5); severity=page or ticket."
    )
    return dump_yaml(build_rules(slo, override), header)
