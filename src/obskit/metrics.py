"""Your application's own metrics, with the cardinality protection obskit's own metrics get.

Declare instruments once, at import time if you like (before ``obskit.init()``), with the attribute keys they
may carry; record from anywhere::

    from obskit import metrics

    PREDICTIONS = metrics.counter("fraud.predictions", unit="{prediction}", attributes=["model.name", "outcome"])
    SCORE = metrics.histogram("fraud.score", buckets=[0.1, 0.5, 0.9], attributes=["model.name"])

    PREDICTIONS.add(1, {"model.name": "fraud-xgb", "outcome": "block"})
    SCORE.record(0.93, {"model.name": "fraud-xgb"})

Every instrument passes its attributes through obskit's guard:

- each declared key holds at most ``max_values`` distinct values (default ``OBSKIT_MAX_LABEL_VALUES``, 100);
  later new values are recorded as ``"_OTHER"``;
- a key that was not declared is dropped, never raised; it is counted in ``obskit.cardinality.overflow``
  with ``obskit.attribute`` set to that key's name (after 32 distinct undeclared names: ``"_OTHER"``) and a
  warning is logged once;
- values of any type are normalised (strings cut to ``OBSKIT_MAX_LABEL_LENGTH`` characters, ``None`` drops
  the key), so recording never raises.

Names, units, keys and buckets are checked when the instrument is declared (``ConfigError``), never when
a value is recorded. Before ``init()``, or with ``OTEL_SDK_DISABLED=true``, recording is a cheap no-op;
instruments declared before ``init()`` record once it has run, and follow a later re-``init()``.
Instruments live in the ``obskit.metrics`` instrumentation scope.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Sequence
from typing import Final, Generic, TypeVar

from opentelemetry import metrics as otel
from opentelemetry.context import Context
from opentelemetry.util.types import Attributes

from . import _guard, _safety
from . import _semconv as sc
from ._version import __version__
from .exceptions import ConfigError

__all__ = [
    "Counter",
    "Gauge",
    "Histogram",
    "UpDownCounter",
    "counter",
    "gauge",
    "histogram",
    "overflow_counts",
    "up_down_counter",
]

SCOPE: Final = "obskit.metrics"
# OpenTelemetry's instrument name and unit rules (API spec, "Instrument name syntax").
_NAME: Final = re.compile(r"[A-Za-z][-_./A-Za-z0-9]{0,254}")
_UNIT: Final = re.compile(r"[\x00-\x7f]{0,63}")

_I = TypeVar("_I", otel.Counter, otel.UpDownCounter, otel.Histogram, otel._Gauge)


class _Metric(Generic[_I]):
    """Validated declaration, plus the instrument bound to the installed provider's generation."""

    __slots__ = ("_bound", "_bucket_advice", "_description", "_keys", "_lock", "_max_values", "_name", "_unit")

    def __init__(
        self,
        factory: str,
        name: str,
        unit: str,
        description: str,
        attributes: Sequence[str],
        max_values: int | None,
        buckets: Sequence[float] | None = None,
    ) -> None:
        self._name = _check_name(factory, name)
        self._unit = _check_unit(factory, name, unit)
        if not isinstance(description, str):
            raise ConfigError(f"metrics.{factory}({name!r}, description={description!r}): expected a string")
        self._description = description
        self._keys = _check_keys(factory, name, attributes)
        self._max_values = _check_max_values(factory, name, max_values)
        self._bucket_advice = None if buckets is None else _check_buckets(factory, name, buckets)
        self._lock = threading.Lock()
        # (generation, instrument): one tuple so that a reader never pairs a generation with another's instrument.
        self._bound: tuple[int, _I | None] = (-1, None)

    @property
    def name(self) -> str:
        """The instrument name."""
        return self._name

    @property
    def attribute_keys(self) -> frozenset[str]:
        """The declared attribute keys."""
        return self._keys

    def _instrument(self) -> _I | None:
        generation, instrument = self._bound
        # A module attribute read and an int compare: all a recording pays to follow init()/re-init().
        if generation == _guard._generation:
            return instrument
        return self._bind()

    def _bind(self) -> _I | None:
        with self._lock:
            generation, provider = _guard.snapshot()
            instrument: _I | None = None
            if provider is not None:
                with _safety.swallow_errors(f"metrics.{self._name}"):
                    provider.guard.register(self._name, limit=self._max_values, keys=self._keys)
                    instrument = self._create(provider.get_meter(SCOPE, __version__))
            self._bound = (generation, instrument)
            return instrument

    def _create(self, meter: otel.Meter) -> _I:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r} attributes={sorted(self._keys)}>"


class Counter(_Metric[otel.Counter]):
    """A monotonic sum, guarded. Created by :func:`counter`."""

    __slots__ = ()

    def add(self, amount: float, attributes: Attributes = None, context: Context | None = None) -> None:
        """Add a non-negative ``amount``; never raises.

        Args:
            amount: The increment.
            attributes: Values of the declared keys; others are dropped and counted.
            context: The context of the measurement (exemplars), default the current one.
        """
        instrument = self._instrument()
        if instrument is not None:
            instrument.add(amount, attributes, context)

    def _create(self, meter: otel.Meter) -> otel.Counter:
        return meter.create_counter(self._name, self._unit, self._description)


class UpDownCounter(_Metric[otel.UpDownCounter]):
    """A sum that goes up and down (queue depth, items in flight), guarded. Created by :func:`up_down_counter`."""

    __slots__ = ()

    def add(self, amount: float, attributes: Attributes = None, context: Context | None = None) -> None:
        """Add ``amount``, positive or negative; never raises.

        Args:
            amount: The change.
            attributes: Values of the declared keys; others are dropped and counted.
            context: The context of the measurement, default the current one.
        """
        instrument = self._instrument()
        if instrument is not None:
            instrument.add(amount, attributes, context)

    def _create(self, meter: otel.Meter) -> otel.UpDownCounter:
        return meter.create_up_down_counter(self._name, self._unit, self._description)


class Histogram(_Metric[otel.Histogram]):
    """A distribution of values (latencies, sizes, scores), guarded. Created by :func:`histogram`."""

    __slots__ = ()

    def record(self, value: float, attributes: Attributes = None, context: Context | None = None) -> None:
        """Record one non-negative ``value``; never raises.

        Args:
            value: The measurement.
            attributes: Values of the declared keys; others are dropped and counted.
            context: The context of the measurement (exemplars), default the current one.
        """
        instrument = self._instrument()
        if instrument is not None:
            instrument.record(value, attributes, context)

    def _create(self, meter: otel.Meter) -> otel.Histogram:
        return meter.create_histogram(
            self._name, self._unit, self._description, explicit_bucket_boundaries_advisory=self._bucket_advice
        )


class Gauge(_Metric[otel._Gauge]):
    """The last value of something non-additive (temperature, model load), guarded. Created by :func:`gauge`."""

    __slots__ = ()

    def set(self, value: float, attributes: Attributes = None, context: Context | None = None) -> None:
        """Set the current ``value``; never raises.

        Args:
            value: The current value.
            attributes: Values of the declared keys; others are dropped and counted.
            context: The context of the measurement, default the current one.
        """
        instrument = self._instrument()
        if instrument is not None:
            instrument.set(value, attributes, context)

    def _create(self, meter: otel.Meter) -> otel._Gauge:
        return meter.create_gauge(self._name, self._unit, self._description)


def counter(
    name: str,
    *,
    unit: str = "",
    description: str = "",
    attributes: Sequence[str] = (),
    max_values: int | None = None,
) -> Counter:
    """Declare a guarded counter: a sum that only goes up (requests, items, errors).

    Args:
        name: OpenTelemetry instrument name: a letter, then up to 254 letters, digits, ``_ . - /``.
        unit: UCUM unit, such as ``"{request}"`` or ``"By"`` (ASCII, at most 63 characters).
        description: Free text shown by backends.
        attributes: The attribute keys measurements may carry; other keys are dropped and counted.
        max_values: Distinct values kept per key for this instrument. Env: ``OBSKIT_MAX_LABEL_VALUES``
            (the default when None).

    Returns:
        The counter; ``.add(amount, attributes=None)`` records.

    Raises:
        ConfigError: An invalid name, unit or ``max_values``, or a key that is empty, repeated or on the
            built-in deny list (``user.id``, ``session.id``, ``url.full``, ...).

    Example:
        >>> from obskit import metrics
        >>> PREDICTIONS = metrics.counter("fraud.predictions", unit="{prediction}", attributes=["outcome"])
        >>> PREDICTIONS.add(1, {"outcome": "block"})
    """
    return Counter("counter", name, unit, description, attributes, max_values)


def up_down_counter(
    name: str,
    *,
    unit: str = "",
    description: str = "",
    attributes: Sequence[str] = (),
    max_values: int | None = None,
) -> UpDownCounter:
    """Declare a guarded up-down counter: a sum that goes up and down (queue depth, requests in flight).

    Args:
        name: OpenTelemetry instrument name: a letter, then up to 254 letters, digits, ``_ . - /``.
        unit: UCUM unit, such as ``"{job}"`` (ASCII, at most 63 characters).
        description: Free text shown by backends.
        attributes: The attribute keys measurements may carry; other keys are dropped and counted.
        max_values: Distinct values kept per key for this instrument. Env: ``OBSKIT_MAX_LABEL_VALUES``
            (the default when None).

    Returns:
        The up-down counter; ``.add(amount, attributes=None)`` records.

    Raises:
        ConfigError: As for :func:`counter`.

    Example:
        >>> from obskit import metrics
        >>> QUEUE = metrics.up_down_counter("batcher.queue", unit="{request}", attributes=["model.name"])
        >>> QUEUE.add(1, {"model.name": "fraud-xgb"})
        >>> QUEUE.add(-1, {"model.name": "fraud-xgb"})
    """
    return UpDownCounter("up_down_counter", name, unit, description, attributes, max_values)


def histogram(
    name: str,
    *,
    unit: str = "",
    description: str = "",
    attributes: Sequence[str] = (),
    max_values: int | None = None,
    buckets: Sequence[float] | None = None,
) -> Histogram:
    """Declare a guarded histogram: a distribution (latencies, payload sizes, scores).

    Args:
        name: OpenTelemetry instrument name: a letter, then up to 254 letters, digits, ``_ . - /``.
        unit: UCUM unit, such as ``"s"`` or ``"By"`` (ASCII, at most 63 characters).
        description: Free text shown by backends.
        attributes: The attribute keys measurements may carry; other keys are dropped and counted.
        max_values: Distinct values kept per key for this instrument. Env: ``OBSKIT_MAX_LABEL_VALUES``
            (the default when None).
        buckets: Explicit bucket boundaries, strictly increasing and finite (OpenTelemetry's advisory
            boundaries; a View configured on the provider still wins). None: the SDK's default buckets.

    Returns:
        The histogram; ``.record(value, attributes=None)`` records.

    Raises:
        ConfigError: As for :func:`counter`, or buckets that are not strictly increasing finite numbers.

    Example:
        >>> from obskit import metrics
        >>> SCORE = metrics.histogram("fraud.score", buckets=[0.1, 0.5, 0.9], attributes=["model.name"])
        >>> SCORE.record(0.93, {"model.name": "fraud-xgb"})
    """
    return Histogram("histogram", name, unit, description, attributes, max_values, buckets)


def gauge(
    name: str,
    *,
    unit: str = "",
    description: str = "",
    attributes: Sequence[str] = (),
    max_values: int | None = None,
) -> Gauge:
    """Declare a guarded gauge: the current value of something non-additive (a temperature, a model's load).

    Args:
        name: OpenTelemetry instrument name: a letter, then up to 254 letters, digits, ``_ . - /``.
        unit: UCUM unit, such as ``"1"`` for a ratio (ASCII, at most 63 characters).
        description: Free text shown by backends.
        attributes: The attribute keys measurements may carry; other keys are dropped and counted.
        max_values: Distinct values kept per key for this instrument. Env: ``OBSKIT_MAX_LABEL_VALUES``
            (the default when None).

    Returns:
        The gauge; ``.set(value, attributes=None)`` records.

    Raises:
        ConfigError: As for :func:`counter`.

    Example:
        >>> from obskit import metrics
        >>> LOAD = metrics.gauge("model.load", unit="1", attributes=["model.name"])
        >>> LOAD.set(0.75, {"model.name": "fraud-xgb"})
    """
    return Gauge("gauge", name, unit, description, attributes, max_values)


def overflow_counts() -> dict[tuple[str, str], int]:
    """Measurements whose value became ``_OTHER``, or whose key was dropped, by (metric, attribute key).

    The same numbers are exported as ``obskit.cardinality.overflow``. Empty before ``init()``.

    Example:
        >>> from obskit import metrics
        >>> metrics.overflow_counts()
        {}
    """
    provider = _guard.current()
    return {} if provider is None else provider.guard.overflow_counts()


# ---------------------------------------------------------------------------------------------------------------
# Declaration-time checks (prometheus_client style: fail where the metric is defined, never when recording).


def _check_name(factory: str, name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"metrics.{factory}({name!r}): invalid instrument name; expected 1 to 255 characters, a letter "
            "followed by letters, digits, '_', '.', '-' or '/' (OpenTelemetry instrument name syntax)"
        )
    return name


def _check_unit(factory: str, name: str, unit: object) -> str:
    if not isinstance(unit, str) or not _UNIT.fullmatch(unit):
        raise ConfigError(
            f"metrics.{factory}({name!r}, unit={unit!r}): expected an ASCII string of at most 63 characters "
            "(a UCUM unit such as 's', 'By' or '{request}')"
        )
    return unit


def _check_keys(factory: str, name: str, keys: object) -> frozenset[str]:
    where = f"metrics.{factory}({name!r}, attributes={keys!r})"
    if isinstance(keys, str) or not isinstance(keys, Sequence | set | frozenset):
        raise ConfigError(f"{where}: expected a sequence of attribute keys, e.g. ['model.name']")
    seen: set[str] = set()
    for key in keys:
        if not isinstance(key, str) or not key or len(key) > _guard.MAX_KEY_LENGTH:
            raise ConfigError(f"{where}: key {key!r} is not a string of 1 to {_guard.MAX_KEY_LENGTH} characters")
        if key in sc.DEFAULT_DENIED_LABELS:
            raise ConfigError(
                f"{where}: key {key!r} is on obskit's deny list (unbounded or personal values such as user ids, "
                "session ids and URLs never go on metrics; keep it on spans)"
            )
        if key in seen:
            raise ConfigError(f"{where}: key {key!r} is repeated")
        seen.add(key)
    if len(seen) > _guard.DEFAULT_MAX_KEYS:
        raise ConfigError(f"{where}: at most {_guard.DEFAULT_MAX_KEYS} keys per instrument")
    return frozenset(seen)


def _check_max_values(factory: str, name: str, max_values: object) -> int | None:
    if max_values is None:
        return None
    if isinstance(max_values, bool) or not isinstance(max_values, int) or not 1 <= max_values <= 100_000:
        raise ConfigError(
            f"metrics.{factory}({name!r}, max_values={max_values!r}): expected an integer between 1 and 100000"
        )
    return max_values


def _check_buckets(factory: str, name: str, buckets: object) -> tuple[float, ...]:
    accepted = f"metrics.{factory}({name!r}, buckets=...): expected strictly increasing finite numbers"
    if isinstance(buckets, str) or not isinstance(buckets, Sequence):
        raise ConfigError(accepted)
    bounds: list[float] = []
    for bound in buckets:
        if isinstance(bound, bool) or not isinstance(bound, int | float) or not math.isfinite(bound):
            raise ConfigError(f"{accepted}, got {bound!r}")
        if bounds and bound <= bounds[-1]:
            raise ConfigError(f"{accepted}, got {bound!r} after {bounds[-1]!r}")
        bounds.append(float(bound))
    return tuple(bounds)
