"""``obskit gate``: evaluate the SLOs against a Prometheus server now, print a table, and return an exit code.

Exit codes: 0 every objective passes, 1 at least one fails, 2 inconclusive (no data for an objective, no
requests in the window, or Prometheus unreachable or refusing the query) and nothing failed.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

from rich.console import Console
from rich.table import Table

from .. import _semconv as sc
from .._config import mask_url, scrub
from ..exceptions import ConfigError
from ._model import Matcher, Objective, SLOFile
from ._rules import effective_selector, good_ratio_query, number, selector_text

QUERY_PATH: Final = "/api/v1/query"

EXIT_PASS: Final = 0
EXIT_FAIL: Final = 1
EXIT_INCONCLUSIVE: Final = 2

Status = Literal["pass", "fail", "inconclusive"]


class PrometheusUnavailable(Exception):
    """The server could not be reached, timed out, or answered with something that is not the query API."""


class PrometheusQueryError(Exception):
    """The server rejected the query (HTTP 400/422): usually a bad ``--selector``."""


class PrometheusClient:
    """The instant-query endpoint (``/api/v1/query``) of a Prometheus-compatible server, over stdlib urllib.

    ``url`` is the server's base URL: a path prefix (``/prometheus``) and a query string are kept, the API path
    goes between them; ``user:password@`` is sent as HTTP basic auth and masked in every message.

    Raises:
        ConfigError: ``url`` is not a usable http(s) URL (bad port, bad IPv6 literal, spaces, no host).
    """

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.display = mask_url(url)  # what messages show: never the credentials

        def bad(problem: str) -> ConfigError:
            return ConfigError(
                f"--prometheus {self.display!r}: {problem}; expected the server's base URL, e.g. "
                "http://localhost:9090 or https://user:password@prometheus.example/prometheus"
            )

        if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
            raise bad("contains whitespace or control characters")
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port  # raises ValueError for a port that is not a number from 0 to 65535
        except ValueError as exc:
            raise bad(f"not a valid URL ({str(exc).replace(url, self.display)})") from None
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise bad("not an http(s) URL")
        if not parts.hostname:
            raise bad("has no host name")
        try:
            parts.hostname.encode("idna")  # what urllib does on connect; it raises UnicodeError for "a..b"
        except UnicodeError:
            raise bad(f"the host name {parts.hostname!r} is not a valid DNS name") from None
        if port == 0:
            raise bad("port 0 is not a port a server listens on")
        self.headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        self.authorization: str | None = None
        self.secrets: list[str] = []
        if parts.username is not None or parts.password is not None:
            user = urllib.parse.unquote(parts.username or "")
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self.authorization = f"Basic {token}"
            userinfo = parts.netloc.rpartition("@")[0]
            # The request URL carries no credentials, so only a server echoing them could put them in a message.
            # Secrets under 4 characters are not scrubbed: replacing "p" everywhere would garble every message.
            candidates = (userinfo, f"{user}:{password}", password, parts.password or "")
            self.secrets = sorted({t for t in candidates if len(t) >= 4}, key=len, reverse=True)
        netloc = parts.netloc.rpartition("@")[2]
        self.endpoint = urllib.parse.urlunsplit(
            (parts.scheme, netloc, parts.path.rstrip("/") + QUERY_PATH, parts.query, "")
        )
        self.url = self.display.rstrip("/")
        self.timeout = timeout

    def _scrub(self, text: str) -> str:
        return scrub(text, self.secrets)

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """Run an instant query; return (labels, value) per sample of the resulting vector or scalar."""
        body = urllib.parse.urlencode({"query": expr}).encode()
        request = urllib.request.Request(self.endpoint, data=body, headers=self.headers)
        if self.authorization is not None:
            # Unredirected: urllib would otherwise send the credentials on to wherever a redirect points.
            request.add_unredirected_header("Authorization", self.authorization)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.load(response)
        except urllib.error.HTTPError as exc:
            detail = self._scrub(_error_detail(exc))
            if exc.code in (400, 422):
                raise PrometheusQueryError(f"Prometheus rejected the query: {detail}") from None
            raise PrometheusUnavailable(f"{self.url} answered HTTP {exc.code}: {detail}") from None
        except OSError as exc:  # URLError, refused, reset, timed out, DNS
            reason = self._scrub(str(getattr(exc, "reason", exc)))
            raise PrometheusUnavailable(f"{self.url} is unreachable: {reason}") from None
        except http.client.HTTPException as exc:  # something that is not HTTP listens there (sshd, gRPC)
            detail = self._scrub(f"{type(exc).__name__}: {str(exc)[:100]}")
            raise PrometheusUnavailable(f"{self.url} did not answer with HTTP ({detail})") from None
        except ValueError as exc:  # not JSON (or a URL urllib refuses after all): not the Prometheus API
            detail = self._scrub(str(exc)[:200])
            raise PrometheusUnavailable(f"{self.url} did not answer with the Prometheus API ({detail})") from None
        if not isinstance(payload, dict) or payload.get("status") != "success":
            raise PrometheusQueryError(self._scrub(f"Prometheus answered {str(payload)[:200]}"))
        try:
            data = payload.get("data", {})
            result = data.get("result")
            if data.get("resultType") == "scalar":
                return [({}, float(result[1]))]
            return [(dict(item.get("metric", {})), float(item["value"][1])) for item in result or []]
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            raise PrometheusUnavailable(
                self._scrub(
                    f"{self.url} did not answer with the Prometheus API (unexpected result {str(payload)[:200]})"
                )
            ) from None


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(exc.read().decode("utf-8", "replace"))
        return str(payload.get("error") or payload)
    except (ValueError, OSError, AttributeError):
        return str(exc.reason)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The gate's result for one objective; ``measured`` is the good-event ratio (0 to 1), if there was one."""

    objective: Objective
    query: str
    status: Status
    measured: float | None
    reason: str = ""


def judge(objective: Objective, query: str, samples: Sequence[tuple[dict[str, str], float]], window: str) -> Verdict:
    """Turn the query's result into a verdict: pass at or above the target, fail below it, else inconclusive."""
    if not samples:
        return Verdict(objective, query, "inconclusive", None, f"no data: no matching series in the last {window}")
    if len(samples) > 1:
        return Verdict(objective, query, "inconclusive", None, f"the query returned {len(samples)} series, not 1")
    value = samples[0][1]
    if math.isnan(value):
        return Verdict(objective, query, "inconclusive", None, f"no data: no requests in the last {window}")
    if Decimal(repr(value)) >= objective.objective_ratio:
        return Verdict(objective, query, "pass", value)
    return Verdict(
        objective,
        query,
        "fail",
        value,
        f"{_percent(value, objective)} good is below the {number(Decimal(repr(objective.target)))}% target",
    )


def evaluate(
    slo: SLOFile, client: PrometheusClient, *, window: str = "5m", override: Sequence[Matcher] = ()
) -> list[Verdict]:
    """Query every objective's good ratio over ``window``; Prometheus being unreachable makes all inconclusive."""
    selector = effective_selector(slo, override)
    verdicts: list[Verdict] = []
    for index, objective in enumerate(slo.objectives):
        query = good_ratio_query(objective, selector, window)
        try:
            samples = client.query(query)
        except PrometheusUnavailable as exc:
            # One unreachable server is the same for every objective: do not wait for each to time out.
            verdicts += [
                Verdict(o, good_ratio_query(o, selector, window), "inconclusive", None, str(exc))
                for o in slo.objectives[index:]
            ]
            break
        except PrometheusQueryError as exc:
            verdicts.append(Verdict(objective, query, "inconclusive", None, str(exc)))
            continue
        verdict = judge(objective, query, samples, window)
        if verdict.status == "inconclusive" and not samples:
            verdict = _with_hint(verdict, client, selector)
        verdicts.append(verdict)
    return verdicts


def _with_hint(verdict: Verdict, client: PrometheusClient, selector: Sequence[Matcher]) -> Verdict:
    """Name the jobs that do have the metric, the usual cause of "no data" being a selector mismatch."""
    metric = sc.PROM_MODEL_DURATION if verdict.objective.scope == "model" else sc.PROM_HTTP_DURATION
    try:
        jobs = sorted({labels.get("job", "") for labels, _ in client.query(f"group by (job) ({metric}_count)")})
    except (PrometheusUnavailable, PrometheusQueryError):
        return verdict
    selected = "{" + ",".join(str(m) for m in selector) + "}"
    if not jobs:
        hint = f"; Prometheus has no {metric}_count series at all"
    else:
        hint = f"; selector {selected}; {metric}_count exists for job " + ", ".join(repr(j) for j in jobs)
    return Verdict(verdict.objective, verdict.query, verdict.status, None, verdict.reason + hint)


def exit_code(verdicts: Sequence[Verdict]) -> int:
    """1 if anything failed, else 2 if anything was inconclusive (or nothing was evaluated), else 0."""
    statuses = {v.status for v in verdicts}
    if "fail" in statuses:
        return EXIT_FAIL
    if "inconclusive" in statuses or not verdicts:
        return EXIT_INCONCLUSIVE
    return EXIT_PASS


def _percent(value: float, objective: Objective) -> str:
    # Two more decimals than the target has, so 99.899% is not printed as a passing-looking 99.90%.
    decimals = max(2, len(number(Decimal(repr(objective.target))).partition(".")[2]) + 2)
    return f"{value * 100:.{decimals}f}%"


def _sli(objective: Objective) -> str:
    if objective.type == "latency":
        return f"latency <= {objective.threshold:g}s, {objective.describe_scope()}"
    return f"availability, {objective.describe_scope()}"


_STYLE: Final = {"pass": "bold green", "fail": "bold red", "inconclusive": "bold yellow"}
_LABEL: Final = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE"}


def report(
    slo: SLOFile,
    verdicts: Sequence[Verdict],
    console: Console,
    *,
    window: str,
    selector: Sequence[Matcher] = (),
    show_queries: bool = False,
) -> None:
    """Print the table (objective, SLI, measured, target, verdict) and one line per non-passing objective."""
    series = "{" + ",".join(str(m) for m in selector) + "}"
    table = Table(title=f"SLO gate: {slo.service} {series}, last {window}", title_justify="left")
    table.add_column("objective", no_wrap=True)
    table.add_column("SLI (threshold)")
    table.add_column("measured (good)", justify="right", no_wrap=True)
    table.add_column("target", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    for v in verdicts:
        measured = _percent(v.measured, v.objective) if v.measured is not None else "-"
        target = f">= {number(Decimal(repr(v.objective.target)))}%"
        table.add_row(
            v.objective.name, _sli(v.objective), measured, target, f"[{_STYLE[v.status]}]{_LABEL[v.status]}[/]"
        )
    console.print(table)
    if show_queries:
        for v in verdicts:
            console.print(f"{v.objective.name}: {v.query}", markup=False, highlight=False, soft_wrap=True)
    # One line per problem; objectives sharing one (Prometheus unreachable) are named together.
    problems: dict[tuple[str, str], list[str]] = {}
    for v in verdicts:
        if v.status != "pass":
            problems.setdefault((v.status, v.reason), []).append(v.objective.name)
    for (status, reason), names in problems.items():
        console.print(f"{_LABEL[status]} {', '.join(names)}: {reason}", markup=False, soft_wrap=True)
    code = exit_code(verdicts)
    failed = [v.objective.name for v in verdicts if v.status == "fail"]
    if code == EXIT_PASS:
        console.print(f"gate: PASS ({len(verdicts)} objectives)", markup=False)
    elif code == EXIT_FAIL:
        console.print("gate: FAIL (" + ", ".join(failed) + ")", markup=False)
    else:
        console.print("gate: INCONCLUSIVE (no verdict; see above)", markup=False)


def as_json(slo: SLOFile, verdicts: Sequence[Verdict], *, window: str, selector: Sequence[Matcher] = ()) -> str:
    """The verdicts as JSON, for pipelines that want to post them somewhere."""
    return json.dumps(
        {
            "service": slo.service,
            "selector": selector_text(selector),
            "window": window,
            "exit_code": exit_code(verdicts),
            "objectives": [
                {
                    "name": v.objective.name,
                    "type": v.objective.type,
                    "target": v.objective.target,
                    "threshold": v.objective.threshold,
                    "measured": v.measured,
                    "verdict": v.status,
                    "reason": v.reason,
                    "query": v.query,
                }
                for v in verdicts
            ],
        },
        indent=2,
    )


def run_gate(
    slo: SLOFile,
    prometheus: str,
    *,
    window: str = "5m",
    override: Sequence[Matcher] = (),
    timeout: float = 10.0,
    console: Console | None = None,
    show_queries: bool = False,
    json_output: bool = False,
) -> int:
    """Evaluate, print, and return the exit code (0 pass, 1 fail, 2 inconclusive)."""
    client = PrometheusClient(prometheus, timeout=timeout)
    verdicts = evaluate(slo, client, window=window, override=override)
    # Pipes and CI logs get a wide table instead of rich's 80-column default.
    out = console or Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    selector = effective_selector(slo, override)
    if json_output:
        out.print(
            as_json(slo, verdicts, window=window, selector=selector), markup=False, highlight=False, soft_wrap=True
        )
    else:
        report(slo, verdicts, out, window=window, selector=selector, show_queries=show_queries)
    return exit_code(verdicts)
