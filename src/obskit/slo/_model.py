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
MIN_TARGET: Final = 1  # percent; anything at or below it is taken for a ratio (0.999 meant as 99.9%)

_TOP_KEYS: Final = ("service", "selector", "objectives")
_OBJECTIVE_KEYS: Final = ("name", "description", "type", "target", "window", "threshold", "routes", "model", "stage")
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_LABEL_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS: Final = ("=~", "!~", "!=", "=")  # two-character operators first, so "=~" is not read as "="
SELECTOR_EXAMPLE: Final = 'job="fraud-scorer",namespace=~"prod-.*"'
_SELECTOR_ACCEPTED: Final = (
    'expected comma-separated label="value" matchers (=, !=, =~, !~): a label name of letters, digits and _, '
    r"and a quoted value with PromQL's escapes (\\ \" \n \t \xNN \uNNNN ...), e.g. " + SELECTOR_EXAMPLE
)
# Go string escapes as Prometheus' parser (util/strutil.Unquote) accepts them; the quote character comes extra.
_SIMPLE_ESCAPES: Final = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_HEX_ESCAPES: Final = {"x": 2, "u": 4, "U": 8}
# What Python's re accepts but RE2 (Prometheus' regex engine) rejects: back-references, look-around, atomic
# groups, conditionals and possessive quantifiers. Python's re is otherwise close enough to RE2 for a first check.
_RE2_UNSUPPORTED: Final = re.compile(r"(?<!\\)(?:\\\\)*\\[1-9Z]|\(\?(?:[=!>(]|<[=!]|P=)|(?<!\\)[*+?}]\+")


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
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


def unquote(literal: str) -> str:
    r"""The value of a PromQL string literal (``"a\"b"``, ``'x'``, a backtick raw string); ``ValueError`` if invalid.

    Follows Prometheus' own unquoting (Go escapes; ``\'`` only in single, ``\"`` only in double quotes; no raw
    newline), so that what passes here also passes ``promtool check rules``.
    """
    if len(literal) < 2 or literal[0] not in "\"'`" or literal[-1] != literal[0]:
        raise ValueError("not a quoted string")
    quote, body = literal[0], literal[1:-1]
    if quote == "`":
        if "`" in body:
            raise ValueError("a backtick inside a raw string")
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\n":
            raise ValueError("a raw newline inside the quotes (write \\n)")
        if char == quote:
            raise ValueError(f"an unescaped {quote} inside the quotes")
        if char != "\\":
            out.append(char)
            i += 1
            continue
        escape = body[i + 1 : i + 2]
        if escape in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[escape])
            i += 2
        elif escape == quote:
            out.append(quote)
            i += 2
        elif escape in _HEX_ESCAPES:
            digits = body[i + 2 : i + 2 + _HEX_ESCAPES[escape]]
            if len(digits) != _HEX_ESCAPES[escape] or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise ValueError(f"\\{escape} needs {_HEX_ESCAPES[escape]} hex digits")
            code = int(digits, 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise ValueError(f"\\{escape}{digits} is not a valid character")
            out.append(chr(code))
            i += 2 + len(digits)
        elif escape in "01234567" and escape:
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or not all(c in "01234567" for c in digits) or int(digits, 8) > 255:
                raise ValueError(f"\\{digits} is not an octal escape (three digits, at most \\377)")
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            raise ValueError(f"unknown escape sequence \\{escape}")
    return "".join(out)


def _check_regex(pattern: str) -> None:
    """Raise ``ValueError`` if ``pattern`` cannot be an RE2 regex (Prometheus anchors it: ``^(?:...)$``)."""
    unsupported = _RE2_UNSUPPORTED.search(pattern)
    if unsupported is not None:
        raise ValueError(f"{unsupported.group()!r} is not supported by RE2, Prometheus' regex engine")
    try:
        re.compile(f"^(?:{pattern})$")
    except re.error as exc:
        raise ValueError(f"the regex does not compile: {exc}") from None


def _scan_quoted(body: str, start: int) -> int:
    """The index just past the string literal that starts at ``body[start]`` (or ``len(body)`` if unterminated)."""
    quote = body[start]
    i = start + 1
    while i < len(body) and body[i] != quote:
        i += 2 if body[i] == "\\" and quote != "`" else 1
    return min(i + 1, len(body) + 1)


def parse_selector(text: str, *, what: str = "selector") -> tuple[Matcher, ...]:
    """Parse ``job="x",env=~"prod.*"`` (braces optional) into matchers; raise ``ConfigError`` naming ``what``.

    Checked as Prometheus would: label names, the four operators, quoting and escapes, and (for ``=~`` and ``!~``)
    that the regex compiles, so a selector that passes renders a rule file that passes ``promtool check rules``.
    """
    body = text.strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1]
    body = body.strip()
    if body.endswith(","):
        body = body[:-1]

    def fail(problem: str) -> ConfigError:
        return ConfigError(f"{what} {text!r}: {problem}; {_SELECTOR_ACCEPTED}")

    matchers: list[Matcher] = []
    position = 0
    while position < len(body):
        rest = body[position:]
        stripped = rest.lstrip()
        position += len(rest) - len(stripped)
        label = _LABEL_RE.match(body, position)
        if label is None:
            raise fail(f"not a list of PromQL label matchers (near {body[position:]!r}: expected a label name)")
        position = label.end()
        while position < len(body) and body[position].isspace():
            position += 1
        op = next((o for o in _OPERATORS if body.startswith(o, position)), None)
        if op is None:
            raise fail(f"not a list of PromQL label matchers (near {body[position:]!r}: expected =, !=, =~ or !~)")
        position += len(op)
        while position < len(body) and body[position].isspace():
            position += 1
        if position >= len(body) or body[position] not in "\"'`":
            raise fail(f"not a list of PromQL label matchers (near {body[position:]!r}: expected a quoted value)")
        end = _scan_quoted(body, position)
        literal = body[position:end]
        if end > len(body):
            raise fail(f"the value {literal!r} of {label.group()} has no closing quote")
        try:
            value = unquote(literal)
            if op in ("=~", "!~"):
                _check_regex(value)
        except ValueError as exc:
            raise fail(f"the value {literal} of {label.group()}: {exc}") from None
        matchers.append(Matcher(label.group(), op, literal))
        position = end
        while position < len(body) and body[position].isspace():
            position += 1
        if position < len(body):
            if body[position] != ",":
                raise fail(f"not a list of PromQL label matchers (near {body[position:]!r}: expected a comma)")
            position += 1
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


_GO_DURATION_RE: Final = re.compile(r"(?:[0-9]+(?:ms|s|m|h))+")


def parse_go_duration(text: str, *, what: str = "--interval") -> str:
    """Check a duration for Go's ``time.ParseDuration`` (Argo Rollouts' fields): no ``d``, ``w`` or ``y`` units."""
    value = parse_duration(text, what=what)
    if not _GO_DURATION_RE.fullmatch(value):
        raise ConfigError(
            f"{what} {text!r}: Argo Rollouts reads this field with Go's time.ParseDuration, which has no "
            "d, w or y units; expected ms, s, m or h, e.g. 1m, 30s, 24h for a day"
        )
    return value


def number_text(value: Decimal) -> str:
    """Plain decimal text (``99.9``, ``14.4``, ``2``), never scientific notation."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


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
        target: Percentage of good events, above 1 and below 100 (``99.9``); a ratio such as ``0.999`` is rejected.
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
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"SLO file {source}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "expected a YAML file saved as UTF-8"
        ) from None
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
        if raw <= MIN_TARGET:
            # 0.999 is a ratio written where a percentage belongs: taken as 0.999% it would leave a 99.001%
            # budget and no alert could ever fire. No real objective promises at most 1% good events.
            hint = f"did you mean {number_text(Decimal(repr(float(raw))) * 100)}? " if raw < 1 else ""
            self.problem(
                path,
                f"{_fmt(raw)} looks like a ratio, but targets are percentages; {hint}"
                f"expected a percentage above {MIN_TARGET} and below 100, e.g. 99.9 for 99.9%",
            )
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
