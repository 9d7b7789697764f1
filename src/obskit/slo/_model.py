"""The SLO file: a small YAML document validated into frozen dataclasses.

Every problem is reported with the file, the path inside it (``objectives[1].target``) and what is accepted;
all problems of a file are collected into one ``ConfigError`` so a user fixes them in one pass.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal

import yaml

from .. import _semconv as sc
from ..exceptions import ConfigError

SLIType = Literal["availability", "latency"]
SLOWindow = Literal["28d", "30d"]

SLI_TYPES: Final[tuple[SLIType, ...]] = ("availability", "latency")
WINDOWS: Final[dict[str, int]] = {"28d": 28, "30d": 30}
DEFAULT_WINDOW: Final = "30d"

_TOP_KEYS: Final = ("service", "selector", "objectives")
_OBJECTIVE_KEYS: Final = ("name", "description", "type", "target", "window", "threshold", "routes", "model", "stage")
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# One PromQL label matcher: name, operator and a quoted string (double, single or backtick quotes).
_MATCHER_RE: Final = re.compile(
    r"""\s*(?P<label>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)\s*(?:,|$)"""
)
SELECTOR_EXAMPLE: Final = 'job="fraud-scorer",namespace=~"prod-.*"'


@dataclass(frozen=True, slots=True)
class Matcher:
    """One PromQL label matcher, e.g. ``job="fraud-scorer"``; ``value`` keeps its PromQL quotes."""

    label: str
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.label}{self.op}{self.value}"


def promql_string(text: str) -> str:
    """Quote ``text`` as a PromQL double-quoted string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def parse_selector(text: str, *, what: str = "selector") -> tuple[Matcher, ...]:
    """Parse ``job="x",env=~"prod.*"`` (braces optional) into matchers; raise ``ConfigError`` naming ``what``."""
    body = text.strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1]
    matchers: list[Matcher] = []
    position = 0
    body = body.strip().rstrip(",")
    while position < len(body):
        match = _MATCHER_RE.match(body, position)
        if match is None or match.end() == position:
            raise ConfigError(
                f"{what} {text!r}: not a list of PromQL label matchers (near {body[position:]!r}); "
                f'expected comma-separated label="value" matchers (=, !=, =~, !~), e.g. {SELECTOR_EXAMPLE}'
            )
        matchers.append(Matcher(match["label"], match["op"], match["value"]))
        position = match.end()
    return tuple(matchers)


_DURATION_RE: Final = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d|w|y))+")


def parse_duration(text: str, *, what: str = "--window") -> str:
    """Check a PromQL duration such as ``5m`` or ``1h30m``; raise ``ConfigError`` naming ``what``."""
    value = text.strip()
    if not _DURATION_RE.fullmatch(value) or not any(ch in "123456789" for ch in value):
        raise ConfigError(
            f"{what} {text!r}: not a PromQL duration; expected a positive number with a unit "
            "(ms, s, m, h, d, w, y), e.g. 5m, 30s, 1h30m"
        )
    return value


def merge_selectors(base: Sequence[Matcher], override: Sequence[Matcher]) -> tuple[Matcher, ...]:
    """Matchers of ``override`` replace those of ``base`` on the same label; other labels are added."""
    replaced = {m.label for m in override}
    return tuple(m for m in base if m.label not in replaced) + tuple(override)


@dataclass(frozen=True, slots=True)
class Objective:
    """One service level objective.

    Attributes:
        name: Unique within the file; becomes the ``slo_name`` label of rules and alerts.
        type: ``availability`` (good = not 5xx and no ``error.type``) or ``latency`` (good = at most ``threshold``).
        target: Percentage of good events, strictly between 0 and 100 (``99.9``).
        window: Compliance period, ``28d`` or ``30d``.
        threshold: Latency objectives only: seconds, a bucket boundary of the histogram the SLI reads.
        routes: HTTP route templates (``/predict``); empty with no model means every route.
        model: ``model.name`` of an ``obskit.model.duration`` SLI (with ``stage``), else ``None``.
        stage: ``model.stage`` of that SLI (``inference``), else ``None``.
        description: Free text, copied into alert annotations.

    Example:
        >>> o = Objective(name="predict-availability", type="availability", target=99.9, routes=("/predict",))
        >>> str(o.error_budget), o.scope
        ('0.001', 'http')
    """

    name: str
    type: SLIType
    target: float
    window: SLOWindow = "30d"
    threshold: float | None = None
    routes: tuple[str, ...] = ()
    model: str | None = None
    stage: str | None = None
    description: str = ""

    @property
    def scope(self) -> Literal["http", "model"]:
        """Which histogram the SLI reads: the HTTP server duration or the model stage duration."""
        return "model" if self.model is not None else "http"

    @property
    def objective_ratio(self) -> Decimal:
        """The target as an exact ratio (``99.9`` becomes ``0.999``)."""
        return Decimal(repr(self.target)) / 100

    @property
    def error_budget(self) -> Decimal:
        """The allowed fraction of bad events (``99.9`` becomes ``0.001``), exact so that rules read well."""
        return 1 - self.objective_ratio

    @property
    def window_days(self) -> int:
        return WINDOWS[self.window]

    def describe_scope(self) -> str:
        """Human-readable scope, e.g. ``routes /predict`` or ``model fraud-xgb, stage inference``."""
        if self.model is not None:
            return f"model {self.model}, stage {self.stage}"
        return "routes " + ", ".join(self.routes) if self.routes else "all routes"


@dataclass(frozen=True, slots=True)
class SLOFile:
    """A validated SLO file: the service and its objectives.

    Attributes:
        service: The service's ``service.name``.
        objectives: The objectives, in file order.
        selector: PromQL matchers that select the service's series; ``job="<service>"`` unless the file sets
            ``selector`` (the OpenTelemetry Collector's Prometheus exporter sets ``job`` from ``service.name``).
        source: Where the file was read from, for messages.

    Example:
        >>> slo = load_slo_file("examples/slo.yaml")  # doctest: +SKIP
        >>> [o.name for o in slo.objectives]  # doctest: +SKIP
        ['predict-availability', 'predict-latency', 'inference-latency']
    """

    service: str
    objectives: tuple[Objective, ...]
    selector: tuple[Matcher, ...]
    source: str = "<string>"


def load_slo_file(path: str | Path) -> SLOFile:
    """Read and validate an SLO file.

    Args:
        path: The YAML file.

    Returns:
        The validated ``SLOFile``.

    Raises:
        ConfigError: The file cannot be read, is not YAML, or does not validate; the message names the file,
            the path inside it (``objectives[1].target``) and what is accepted, for every problem found.

    Example:
        >>> slo = load_slo_file("examples/slo.yaml")  # doctest: +SKIP
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"SLO file {source}: cannot be read ({exc.strerror or exc})") from None
    return parse_slo(text, source=source)


def parse_slo(text: str, *, source: str = "<string>") -> SLOFile:
    """Validate the YAML text of an SLO file; ``source`` names it in messages."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"SLO file {source}: not valid YAML{where}: {problem}") from None
    return _Validator(source).document(data)


def nearest_boundaries(value: float, boundaries: Sequence[float]) -> tuple[float, ...]:
    """The boundaries either side of ``value`` (one at the ends of the range)."""
    index = bisect.bisect_left(boundaries, value)
    return tuple(boundaries[i] for i in (index - 1, index) if 0 <= i < len(boundaries))


def _fmt(number: float) -> str:
    return f"{number:g}"


class _Validator:
    """Walks the parsed YAML, collecting problems as ``path: message`` lines."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}" if path else message)

    def fail(self) -> ConfigError:
        count = len(self.problems)
        head = f"SLO file {self.source}: " + ("1 problem" if count == 1 else f"{count} problems")
        return ConfigError(head + "\n" + "\n".join(f"  {p}" for p in self.problems))

    def keys(self, path: str, data: Mapping[Any, Any], accepted: Sequence[str]) -> None:
        for key in data:
            if key not in accepted:
                self.problem(_join(path, str(key)), "unknown key; accepted keys: " + ", ".join(accepted))

    def string(self, path: str, value: Any, *, required: bool = True) -> str | None:
        if value is None:
            if required:
                self.problem(path, "missing; expected a non-empty string")
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(path, f"{value!r} is not a non-empty string; expected a non-empty string")
            return None
        return value.strip()

    def document(self, data: Any) -> SLOFile:
        if not isinstance(data, Mapping):
            kind = "empty" if data is None else f"a {type(data).__name__}"
            raise ConfigError(
                f"SLO file {self.source}: the document is {kind}; expected a mapping with keys " + ", ".join(_TOP_KEYS)
            )
        self.keys("", data, _TOP_KEYS)
        service = self.string("service", data.get("service"))
        selector: tuple[Matcher, ...] = ()
        raw_selector = data.get("selector")
        if raw_selector is not None:
            if not isinstance(raw_selector, str):
                self.problem(
                    "selector",
                    f"{raw_selector!r} is not a string; expected PromQL label matchers such as {SELECTOR_EXAMPLE}",
                )
            else:
                try:
                    selector = parse_selector(raw_selector, what="selector")
                except ConfigError as exc:
                    self.problem("", str(exc))
        elif service is not None:
            selector = (Matcher("job", "=", promql_string(service)),)
        objectives = self.objectives(data.get("objectives"))
        if self.problems or service is None:
            raise self.fail()
        return SLOFile(service=service, objectives=objectives, selector=selector, source=self.source)

    def objectives(self, raw: Any) -> tuple[Objective, ...]:
        if raw is None:
            self.problem("objectives", "missing; expected a non-empty list of objectives")
            return ()
        if not isinstance(raw, list) or not raw:
            self.problem("objectives", f"{_short(raw)} is not a non-empty list; expected a list of objectives")
            return ()
        result: list[Objective] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(raw):
            path = f"objectives[{index}]"
            objective = self.objective(path, item)
            if objective is None:
                continue
            if objective.name in seen:
                self.problem(
                    f"{path}.name",
                    f"{objective.name!r} is already used by objectives[{seen[objective.name]}]; expected a unique name",
                )
                continue
            seen[objective.name] = index
            result.append(objective)
        return tuple(result)

    def objective(self, path: str, raw: Any) -> Objective | None:
        if not isinstance(raw, Mapping):
            self.problem(path, f"{_short(raw)} is not a mapping; expected keys " + ", ".join(_OBJECTIVE_KEYS))
            return None
        before = len(self.problems)
        self.keys(path, raw, _OBJECTIVE_KEYS)

        name = self.string(f"{path}.name", raw.get("name"))
        if name is not None and not _NAME_RE.fullmatch(name):
            self.problem(
                f"{path}.name",
                f"{name!r} is not accepted; expected letters, digits, '-', '_' and '.', "
                "starting with a letter or digit",
            )
        description = raw.get("description", "")
        if not isinstance(description, str):
            self.problem(f"{path}.description", f"{_short(description)} is not a string; expected text")

        sli_type = raw.get("type")
        if sli_type is None:
            self.problem(f"{path}.type", "missing; expected one of 'availability', 'latency'")
        elif sli_type not in SLI_TYPES:
            self.problem(
                f"{path}.type", f"{_short(sli_type)} is not accepted; expected one of 'availability', 'latency'"
            )

        target = self.target(f"{path}.target", raw.get("target"))
        window = raw.get("window", DEFAULT_WINDOW)
        if not isinstance(window, str) or window not in WINDOWS:
            self.problem(f"{path}.window", f"{_short(window)} is not accepted; expected one of '28d', '30d'")

        routes, model, stage = self.scope(path, raw)
        threshold = self.threshold(path, raw, sli_type, model)

        if len(self.problems) > before or name is None or target is None or sli_type is None:
            return None
        return Objective(
            name=name,
            type=sli_type,
            target=target,
            window=window,
            threshold=threshold,
            routes=routes,
            model=model,
            stage=stage,
            description=description,
        )

    def target(self, path: str, raw: Any) -> float | None:
        accepted = "expected a percentage strictly between 0 and 100, e.g. 99.9"
        if raw is None:
            self.problem(path, f"missing; {accepted}")
            return None
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            self.problem(path, f"{_short(raw)} is not a number; {accepted}")
            return None
        if not 0 < raw < 100:
            self.problem(path, f"{_fmt(raw)} is outside (0, 100); {accepted}")
            return None
        return float(raw)

    def scope(self, path: str, raw: Mapping[Any, Any]) -> tuple[tuple[str, ...], str | None, str | None]:
        has_routes, has_model, has_stage = "routes" in raw, "model" in raw, "stage" in raw
        if has_routes and (has_model or has_stage):
            self.problem(
                path,
                "has both 'routes' and 'model'/'stage'; expected either routes (an HTTP SLI) or "
                "model and stage (a model stage SLI)",
            )
            return (), None, None
        routes: list[str] = []
        if has_routes:
            value = raw["routes"]
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not value:
                self.problem(
                    f"{path}.routes",
                    f"{_short(value)} is not a non-empty list; expected route templates such as ['/predict']",
                )
            else:
                for i, route in enumerate(value):
                    text = self.string(f"{path}.routes[{i}]", route)
                    if text is not None:
                        routes.append(text)
        model = stage = None
        if has_model or has_stage:
            model = self.string(f"{path}.model", raw.get("model"))
            stage = self.string(f"{path}.stage", raw.get("stage"))
            if not has_model:
                self.problem(f"{path}.model", "missing; 'stage' needs 'model' (the model.name of the stage)")
            if not has_stage:
                self.problem(
                    f"{path}.stage",
                    "missing; 'model' needs 'stage' (preprocess, inference, postprocess or a custom stage name)",
                )
        return tuple(routes), model, stage

    def threshold(self, path: str, raw: Mapping[Any, Any], sli_type: SLIType | None, model: str | None) -> float | None:
        value = raw.get("threshold")
        if sli_type != "latency":
            if value is not None and sli_type is not None:
                self.problem(
                    f"{path}.threshold", "only latency objectives take a threshold; remove it or use type: latency"
                )
            return None
        buckets: tuple[float, ...]
        if model is not None or "model" in raw:
            instrument, buckets = sc.MODEL_DURATION, sc.MODEL_DURATION_BUCKETS
        else:
            instrument, buckets = sc.METRIC_HTTP_SERVER_REQUEST_DURATION, sc.HTTP_DURATION_BUCKETS
        listing = ", ".join(_fmt(b) for b in buckets)
        if value is None:
            self.problem(
                f"{path}.threshold",
                f"missing; latency objectives need a threshold in seconds, one of "
                f"the {instrument} bucket boundaries: {listing}",
            )
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            self.problem(
                f"{path}.threshold",
                f"{_short(value)} is not a positive number of seconds; expected one "
                f"of the {instrument} bucket boundaries: {listing}",
            )
            return None
        for boundary in buckets:
            if math.isclose(value, boundary, rel_tol=1e-9):
                return float(boundary)
        near = " and ".join(_fmt(b) for b in nearest_boundaries(float(value), buckets))
        self.problem(
            f"{path}.threshold",
            f"{_fmt(value)}s is not a bucket boundary of {instrument}, so the SLI cannot be read from the histogram; "
            f"nearest boundaries: {near} (all: {listing})",
        )
        return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
