"""The cardinality guard: bounded per-(instrument, key) value sets, a deny list, ``_OTHER``, overflow counts.

``LabelGuard`` decides which attribute values a metric may carry; ``GuardedMeterProvider`` wraps any
``MeterProvider`` so that every instrument it hands out (contrib HTTP instrumentors, the stage decorators,
``obskit.metrics``) passes its attributes through one guard. OpenTelemetry **API** only: the SDK is never
imported here, so all of this is a cheap no-op until ``init()`` installs a real provider.
"""

from __future__ import annotations

import math
import operator
import reprlib
import threading
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry.context import Context
from opentelemetry.metrics import (
    CallbackOptions,
    CallbackT,
    Counter,
    Histogram,
    Meter,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    Observation,
    UpDownCounter,
)
from opentelemetry.metrics import _Gauge as Gauge
from opentelemetry.trace import get_current_span
from opentelemetry.util.types import Attributes, AttributeValue

from . import _aggregate, _safety
from . import _semconv as sc
from ._version import __version__

__all__ = ["GuardedMeterProvider", "LabelGuard", "current", "generation", "install", "snapshot"]

OTHER: Final = sc.OTHER
# Defaults of the bounds that are not in the configuration table (see LabelGuard's docstring).
DEFAULT_MAX_KEYS: Final = 32
DEFAULT_MAX_INSTRUMENTS: Final = 1000
MAX_KEY_LENGTH: Final = 255
MAX_SEQUENCE_ITEMS: Final = 32

_MISS: Final = object()
# A denied key's entry in an instrument's key table: always empty, so the fast path sends it to the slow path.
_DENIED: Final[dict[object, AttributeValue]] = {}
# One NaN object: NaN != NaN, so every fresh float("nan") would otherwise take a slot of its own.
_NAN: Final = float("nan")
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

_Filter = Callable[[Mapping[Any, object]], dict[str, AttributeValue]]


def _bounded_repr(max_length: int) -> reprlib.Repr:
    # reprlib bounds the work as well as the output: a nested dict of a million items is not walked.
    r = reprlib.Repr()
    r.maxstring = r.maxother = r.maxlong = max_length
    r.maxlevel = 3
    return r


def _clean_str(text: str, max_length: int) -> str:
    """Cut to ``max_length`` characters and make it encodable as UTF-8 (lone surrogates are escaped)."""
    if len(text) > max_length:
        text = text[:max_length]
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")[:max_length]
    return text


def _clean_int(value: int, max_length: int) -> int | str:
    # OTLP carries int64; a larger int would make the exporter fail the whole batch.
    if _INT64_MIN <= value <= _INT64_MAX:
        return value
    # str() of an int over 4300 digits raises ValueError on 3.11+; hex has no such limit.
    return _clean_str(str(value) if value.bit_length() < 4096 else hex(value), max_length)


def _clean_scalar(value: object, max_length: int) -> str | bool | int | float | None:
    """A str/bool/int/float (subclasses such as enums turned into the plain type), else None."""
    if isinstance(value, str):
        return _clean_str(str.__str__(value), max_length)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return _clean_int(int.__int__(value), max_length)
    if isinstance(value, float):
        number = float.__float__(value)
        return _NAN if math.isnan(number) else number
    if hasattr(type(value), "__index__"):  # numpy integers and the like
        try:
            return _clean_int(operator.index(value), max_length)  # type: ignore[arg-type]
        except Exception:
            return None
    return None


def _clean_value(value: object, max_length: int, reprs: reprlib.Repr) -> AttributeValue:
    """Turn any object into a valid, hashable OpenTelemetry metric attribute value; never raises."""
    try:
        return _convert(value, max_length, reprs)
    except Exception:  # a hostile __len__, __getitem__ or __repr__, a multi-dimensional memoryview, ...
        return _clean_str(f"<{type(value).__qualname__}>", max_length)


def _convert(value: object, max_length: int, reprs: reprlib.Repr) -> AttributeValue:
    scalar = _clean_scalar(value, max_length)
    if scalar is not None:
        return scalar
    if isinstance(value, bytes | bytearray | memoryview):
        # At most 4 bytes per character: decoding more than that would only be cut away.
        raw = bytes(value[: max_length * 4])
        return _clean_str(raw.decode("utf-8", "backslashreplace"), max_length)
    if isinstance(value, list | tuple):
        items = [_clean_scalar(item, max_length) for item in value[:MAX_SEQUENCE_ITEMS]]
        kinds = {type(item) for item in items}
        # OpenTelemetry allows homogeneous arrays of primitives only.
        if len(kinds) <= 1 and type(None) not in kinds:
            return tuple(items)
        return _clean_str(reprs.repr(value), max_length)
    if isinstance(value, dict | set | frozenset):
        return _clean_str(reprs.repr(value), max_length)
    try:
        text = str(value)
    except Exception:
        text = f"<{type(value).__qualname__}>"
    return _clean_str(text, max_length)


def _clean_key(key: object) -> str | None:
    """A usable attribute key, or None: keys are non-empty strings of at most ``MAX_KEY_LENGTH`` characters."""
    if isinstance(key, str):
        text = str.__str__(key)
    else:
        try:
            text = str(key)
        except Exception:
            return None
    if not text or len(text) > MAX_KEY_LENGTH:
        return None
    return _clean_str(text, MAX_KEY_LENGTH)


class _Instrument:
    """The guard's state for one instrument name: accepted keys, and per key the accepted values."""

    __slots__ = ("allowed", "dropped_keys", "guard", "limit", "n_keys", "name", "values")

    def __init__(self, guard: LabelGuard, name: str, limit: int) -> None:
        self.guard = guard
        self.name = name
        self.limit = limit
        # None: any key (up to the key cap); a set: declared keys only (obskit.metrics).
        self.allowed: frozenset[str] | None = None
        # key -> {value: canonical value}. A dict rather than a set so that equal values of different types
        # (1, 1.0, True; an IntEnum and its int) share one slot and are all recorded as the first one seen.
        self.values: dict[object, dict[object, AttributeValue]] = {}
        self.n_keys = 0
        self.dropped_keys: set[str] = set()

    def filter(self, attributes: Mapping[Any, object]) -> dict[str, AttributeValue]:
        """The guarded copy of ``attributes``. Fast path: no lock, no allocation but the output dict."""
        out: dict[str, AttributeValue] = {}
        values = self.values
        miss = _MISS
        # Measured alternatives, slower on CPython 3.11: a cache keyed by tuple(attributes.items()) (hashing
        # the pairs costs more than four lookups), and an explicit "is denied" test per key. Denied keys map to
        # an empty dict instead, so they fall through to the slow path, which drops them.
        try:
            for key, value in attributes.items():
                # Lookups are atomic under the GIL; the slow path only ever adds entries, under the lock.
                try:
                    kept = values[key].get(value, miss)
                except Exception:  # a new key, an unhashable value (list, dict), a raising __hash__/__eq__
                    kept = miss
                if kept is not miss:
                    out[key] = kept  # type: ignore[assignment]  # values hold clean values only
                else:
                    self._admit(key, value, out)
        except Exception:
            if not isinstance(attributes, Mapping):  # the caller's mistake, not ours: as the SDK, drop them
                _safety.log_once(
                    "guard:not-a-mapping",
                    "obskit: metric attributes must be a mapping, got %s",
                    type(attributes).__name__,
                )
                return {}
            # A contextmanager costs a microsecond per call, so the hot path uses a bare try (free on 3.11)
            # and enters swallow_errors only to count a failure (it re-raises under our own tests).
            _swallow("LabelGuard.filter")
            return {}
        return out

    def reusable_filter(
        self, attributes: Mapping[str, Any], keys: frozenset[str] | None
    ) -> tuple[dict[str, AttributeValue], bool]:
        """:meth:`filter` over the attributes whose key is in ``keys`` (all when None), and whether it may be reused.

        The answer may be reused for the same attributes without filtering again unless filtering counted an
        overflow (a value replaced by ``_OTHER``, a key dropped): SPEC §4 counts those at every measurement. An
        overflow counted meanwhile by another thread only makes the answer False.
        """
        guard = self.guard
        before = guard.overflow_events
        kept = _only(attributes, keys)
        guarded = self.filter(kept) if kept else {}
        return guarded, guard.overflow_events == before

    def _admit(self, raw_key: object, value: object, out: dict[str, AttributeValue]) -> None:
        """Slow path: a key or value not seen before, an overflow, a denied or undeclared key."""
        guard = self.guard
        key = _clean_key(raw_key)  # the same object for a valid str key
        if key is None:
            self._drop_key(OTHER, "is not a valid key (a non-empty string of at most 255 characters)")
            return
        if key in guard.denied:
            if key is raw_key:  # remembered for the fast path; bounded by the deny list's size
                with guard.lock:
                    self.values[key] = _DENIED
            return
        if value is None:
            # OpenTelemetry treats a None attribute value as invalid and drops it (as on spans).
            return
        clean = _clean_value(value, guard.max_length, guard.reprs)
        first_overflow = False
        with guard.lock:
            seen = self.values.get(key)
            if seen is None and (self.allowed is None or key in self.allowed) and self.n_keys < guard.max_keys:
                # Published whole: a lock-free reader sees either no entry or this (growing) dict.
                seen = self.values[key] = {}
                self.n_keys += 1
            if seen is not None:
                kept = seen.get(clean, _MISS)
                if kept is _MISS:
                    if len(seen) < self.limit:
                        seen[clean] = kept = clean
                    else:
                        kept = OTHER
                        first_overflow = guard.count_overflow(self.name, key)
                out[key] = kept  # type: ignore[assignment]  # a clean value or OTHER
        if seen is None:
            if self.allowed is not None and key not in self.allowed:
                self._drop_key(key, "is not declared")
            else:
                self._drop_key(key, f"is beyond the limit of {guard.max_keys} keys per metric")
        elif first_overflow:
            _safety.log_once(
                f"guard:{self.name}:{key}",
                "obskit: metric %r attribute %r exceeded %d distinct values; new values are recorded as %r "
                "and counted in %s",
                self.name,
                key,
                self.limit,
                OTHER,
                sc.CARDINALITY_OVERFLOW,
            )

    def _drop_key(self, key: str, reason: str) -> None:
        """Count a dropped key (undeclared, past the key cap, invalid); log once per key."""
        guard = self.guard
        with guard.lock:
            # The names of dropped keys are remembered (to report them) up to the key cap, then pooled.
            if key not in self.dropped_keys:
                if len(self.dropped_keys) < guard.max_keys:
                    self.dropped_keys.add(key)
                else:
                    key = OTHER
            first = guard.count_overflow(self.name, key)
        if first:
            _safety.log_once(
                f"guard:{self.name}:{key}",
                "obskit: metric %r attribute %r %s; it is dropped and counted in %s",
                self.name,
                key,
                reason,
                sc.CARDINALITY_OVERFLOW,
            )


class _Overflowed(_Instrument):
    """Shared state of instruments past the instrument cap: their attributes are all dropped."""

    __slots__ = ()

    def filter(self, attributes: Mapping[Any, object]) -> dict[str, AttributeValue]:
        guard = self.guard
        with guard.lock:
            first = guard.count_overflow(OTHER, OTHER)
        if first:
            _safety.log_once(
                "guard:instruments",
                "obskit: more than %d metric instruments; attributes of further ones are dropped and counted in %s",
                guard.max_instruments,
                sc.CARDINALITY_OVERFLOW,
            )
        return {}


class LabelGuard:
    r"""Bounds the distinct attribute values of every metric instrument.

    For each (instrument name, attribute key) at most ``max_values`` distinct values are kept for the life of
    the process; a later new value is recorded as ``"_OTHER"``. Each replacement counts one overflow for the
    (instrument, key) pair (:meth:`overflow_counts`, exported as ``obskit.cardinality.overflow``), and a
    warning naming both is logged once per pair.

    Keys on the deny list (the built-in one plus ``denied``) are removed from metric attributes, silently:
    that is policy, not overflow. Values of any type are accepted and never raise:

    - ``str`` is cut to ``max_length`` characters (code points); lone surrogates are backslash-escaped so
      the value encodes as UTF-8. ``bytes`` are decoded as UTF-8 with undecodable bytes backslash-escaped
      (``b"\xff"`` becomes ``"\\xff"``), then cut the same way.
    - ``bool``, ``int`` and ``float`` are kept (subclasses such as ``IntEnum`` become the plain type; ints
      outside int64 become strings; every NaN is one value).
    - Lists and tuples of one primitive type become tuples of at most 32 items; other sequences, mappings,
      sets and arbitrary objects become their (bounded) ``repr``/``str``, cut to ``max_length``.
    - ``None`` drops the key, as OpenTelemetry does for span attributes.
    - Values that compare equal (``1``, ``1.0``, ``True``) share one slot and are all recorded as the first
      one seen.

    Memory is bounded whatever the traffic: at most ``max_instruments`` instruments are tracked (attributes
    of further ones are dropped and counted under ``("_OTHER", "_OTHER")``), at most ``max_keys`` keys per
    instrument (further keys are dropped and counted under their name, or ``"_OTHER"`` once ``max_keys``
    dropped names are known), and ``max_values`` values per key, each at most ``max_length`` characters.
    Worst case: ``max_instruments x max_keys x max_values`` values.

    Thread-safe. A value already seen is looked up without a lock (dict lookups are atomic in CPython), and
    the only allocation is the output dict; new values and overflows take one lock.

    Args:
        max_values: Distinct values kept per (instrument, key). Env: ``OBSKIT_MAX_LABEL_VALUES``.
        denied: Keys removed from metric attributes, in addition to the built-in deny list
            (``user.id``, ``session.id``, ``url.full``, ...). Env: ``OBSKIT_DENIED_LABELS``.
        max_length: Longest string value, in characters. Env: ``OBSKIT_MAX_LABEL_LENGTH``.
        max_keys: Attribute keys tracked per instrument.
        max_instruments: Instruments tracked.

    Example:
        >>> guard = LabelGuard(max_values=2)
        >>> [guard.filter("jobs", {"queue": q})["queue"] for q in ("a", "b", "c", "a")]
        ['a', 'b', '_OTHER', 'a']
        >>> guard.overflow_counts()
        {('jobs', 'queue'): 1}
    """

    def __init__(
        self,
        max_values: int = 100,
        denied: Iterable[str] = (),
        max_length: int = sc.MAX_LABEL_VALUE_LENGTH,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        max_instruments: int = DEFAULT_MAX_INSTRUMENTS,
    ) -> None:
        for what, number in (
            ("max_values", max_values),
            ("max_length", max_length),
            ("max_keys", max_keys),
            ("max_instruments", max_instruments),
        ):
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise ValueError(f"LabelGuard({what}={number!r}): expected an integer >= 1")
        self.max_values = max_values
        self.max_length = max_length
        self.max_keys = max_keys
        self.max_instruments = max_instruments
        self.denied: frozenset[str] = sc.DEFAULT_DENIED_LABELS | frozenset(denied)
        self.lock = threading.Lock()
        self.reprs = _bounded_repr(max_length)
        self._instruments: dict[str, _Instrument] = {}
        self._overflowed = _Overflowed(self, OTHER, 0)
        self._overflow: dict[tuple[str, str], int] = {}
        # Overflows counted so far, all pairs together (read without the lock by _Instrument.reusable_filter).
        self.overflow_events = 0

    def filter(
        self, instrument: str, attributes: Mapping[Any, object] | None, limit: int | None = None
    ) -> dict[str, AttributeValue]:
        """Return the attributes ``instrument`` may record; never raises.

        Denied keys are removed, new values past the limit replaced by ``"_OTHER"``, every value normalised.

        Args:
            instrument: The instrument name.
            attributes: The attributes as given by the caller; None means none.
            limit: Overrides ``max_values`` for this instrument from now on (see :meth:`register`).
        """
        state = self._instruments.get(instrument) or self.instrument(instrument)
        if limit is not None and state.limit != limit:
            self.register(instrument, limit=limit)
        if not attributes:
            return {}
        return state.filter(attributes)

    def register(self, instrument: str, *, limit: int | None = None, keys: Iterable[str] | None = None) -> None:
        """Set a per-instrument value limit and/or declare its keys (other keys are then dropped and counted).

        Declared keys add up over calls. Call before recording: values and keys already accepted stay.
        """
        state = self.instrument(instrument)
        if state is self._overflowed:
            return
        with self.lock:
            if limit is not None:
                state.limit = limit
            if keys is not None:
                state.allowed = (state.allowed or frozenset()) | frozenset(keys)

    def instrument(self, name: str) -> _Instrument:
        """The state of one instrument, created on first use (past the instrument cap: the shared one)."""
        state = self._instruments.get(name)
        if state is None:
            with self.lock:
                state = self._instruments.get(name)
                if state is None:
                    if len(self._instruments) >= self.max_instruments:
                        return self._overflowed
                    state = self._instruments[name] = _Instrument(self, name, self.max_values)
        return state

    def count_overflow(self, instrument: str, key: str) -> bool:
        """Count one overflow (caller holds the lock); True the first time for this pair."""
        count = self._overflow.get((instrument, key), 0) + 1
        self._overflow[(instrument, key)] = count
        self.overflow_events += 1
        return count == 1

    def overflow_counts(self) -> dict[tuple[str, str], int]:
        """Values replaced by ``_OTHER`` (and keys dropped) so far, by (instrument, key)."""
        with self.lock:
            return dict(self._overflow)

    def tracked_values(self) -> dict[tuple[str, str], int]:
        """How many distinct values are held per (instrument, key): the guard's memory, for tests and checks."""
        with self.lock:
            return {
                (name, str(key)): len(seen)
                for name, state in self._instruments.items()
                for key, seen in state.values.items()
                if seen is not _DENIED
            }


# ---------------------------------------------------------------------------------------------------------------
# The MeterProvider wrapper. Contrib instrumentors receive it in place of the SDK's, so every signature below
# is the OpenTelemetry API's own, keyword names included.


def _swallow(where: str) -> None:
    """Count the exception being handled (re-raised under our own tests). Call from an ``except`` block."""
    with _safety.swallow_errors(where):
        raise


class _GuardedCounter(Counter):
    def __init__(self, delegate: Counter, guard: _Filter) -> None:
        self.delegate = delegate
        self._add = delegate.add
        self._filter = guard

    def add(self, amount: float, attributes: Attributes = None, context: Context | None = None) -> None:
        try:
            self._add(amount, self._filter(attributes) if attributes else attributes, context)
        except Exception:
            _swallow("Counter.add")


class _GuardedUpDownCounter(UpDownCounter):
    def __init__(self, delegate: UpDownCounter, guard: _Filter) -> None:
        self.delegate = delegate
        self._add = delegate.add
        self._filter = guard

    def add(self, amount: float, attributes: Attributes = None, context: Context | None = None) -> None:
        try:
            self._add(amount, self._filter(attributes) if attributes else attributes, context)
        except Exception:
            _swallow("UpDownCounter.add")


class _GuardedHistogram(Histogram):
    def __init__(self, delegate: Histogram, guard: _Filter) -> None:
        self.delegate = delegate
        self._record = delegate.record
        self._filter = guard

    def record(self, amount: float, attributes: Attributes = None, context: Context | None = None) -> None:
        try:
            self._record(amount, self._filter(attributes) if attributes else attributes, context)
        except Exception:
            _swallow("Histogram.record")


class _AggregatedHistogram(Histogram):
    """A histogram recorded into obskit's own aggregation (``_aggregate``) rather than the SDK's."""

    def __init__(self, histogram: _aggregate.Histogram, guard: _Instrument, keys: frozenset[str] | None) -> None:
        self._histogram = histogram
        self._guard = guard
        self._filter = guard.filter
        self._keys = keys

    def resolve(self, attributes: Mapping[str, Any]) -> tuple[_aggregate.Series, bool]:
        """The series of ``attributes`` after the guard, and whether it may be reused for the same attributes.

        What an integration caches per attribute tuple (see :meth:`_Instrument.reusable_filter`).
        """
        guarded, reusable = self._guard.reusable_filter(attributes, self._keys)
        return self._histogram.series(guarded), reusable

    def record(self, amount: float, attributes: Attributes = None, context: Context | None = None) -> None:
        try:
            attrs = self._filter(_only(attributes, self._keys)) if attributes else {}
            # Exemplars as the SDK's default trace_based filter takes them: the current span, when sampled.
            span_context = get_current_span(context).get_span_context()
            if span_context.trace_flags.sampled:
                self._histogram.series(attrs).record(amount, span_context.trace_id, span_context.span_id)
            else:
                self._histogram.series(attrs).record(amount)
        except Exception:
            _swallow("Histogram.record")


class _AggregatedUpDownCounter(UpDownCounter):
    """An up-down counter summed by obskit (``_aggregate``) rather than by the SDK."""

    def __init__(self, up_down: _aggregate.UpDownSum, guard: _Instrument, keys: frozenset[str] | None) -> None:
        self._sum = up_down
        self._guard = guard
        self._filter = guard.filter
        self._keys = keys

    def resolve(self, attributes: Mapping[str, Any]) -> tuple[_aggregate.UpDownCell, bool]:
        """The sum of ``attributes`` after the guard, and whether it may be reused for the same attributes."""
        guarded, reusable = self._guard.reusable_filter(attributes, self._keys)
        return self._sum.cell(guarded), reusable

    def add(self, amount: float, attributes: Attributes = None, context: Context | None = None) -> None:
        try:
            self._sum.add(amount, self._filter(_only(attributes, self._keys)) if attributes else {})
        except Exception:
            _swallow("UpDownCounter.add")


def _only(attributes: Mapping[str, Any], keys: frozenset[str] | None) -> Mapping[str, Any]:
    """The attributes whose key is in ``keys`` (all of them when None): what an SDK View(attribute_keys=) keeps."""
    if keys is None:
        return attributes
    return {k: v for k, v in attributes.items() if k in keys}


class _GuardedGauge(Gauge):
    def __init__(self, delegate: Gauge, guard: _Filter) -> None:
        self.delegate = delegate
        self._set = delegate.set
        self._filter = guard

    def set(self, amount: float, attributes: Attributes = None, context: Context | None = None) -> None:
        try:
            self._set(amount, self._filter(attributes) if attributes else attributes, context)
        except Exception:
            _swallow("Gauge.set")


class _GuardedObservableCounter(ObservableCounter):
    def __init__(self, delegate: ObservableCounter) -> None:
        self.delegate = delegate


class _GuardedObservableUpDownCounter(ObservableUpDownCounter):
    def __init__(self, delegate: ObservableUpDownCounter) -> None:
        self.delegate = delegate


class _GuardedObservableGauge(ObservableGauge):
    def __init__(self, delegate: ObservableGauge) -> None:
        self.delegate = delegate


def _filter_observations(observations: Iterable[Observation], guard: _Filter) -> list[Observation]:
    return [Observation(o.value, guard(o.attributes), o.context) if o.attributes else o for o in observations]


def _guard_generator(
    inner: Generator[Iterable[Observation], CallbackOptions, None], guard: _Filter
) -> Generator[Iterable[Observation], CallbackOptions, None]:
    """The SDK primes generator callbacks with next() then send()s options; forward both, filter the output."""
    try:
        next(inner)
    except StopIteration:
        return
    options = yield []
    while True:
        try:
            observations = inner.send(options)
        except StopIteration:
            return
        options = yield _filter_observations(observations, guard)


def _guard_callbacks(callbacks: Sequence[CallbackT] | None, guard: _Filter) -> list[CallbackT] | None:
    if callbacks is None:
        return None
    wrapped: list[CallbackT] = []
    for callback in callbacks:
        if isinstance(callback, Generator):
            wrapped.append(_guard_generator(callback, guard))
        else:

            def call(
                options: CallbackOptions, callback: Callable[..., Iterable[Observation]] = callback
            ) -> list[Observation]:
                # The user's exception propagates: the SDK logs it ("Callback failed") as without the guard.
                return _filter_observations(callback(options), guard)

            wrapped.append(call)
    return wrapped


class _GuardedMeter(Meter):
    def __init__(self, delegate: Meter, guard: LabelGuard, aggregated: Aggregated | None = None) -> None:
        super().__init__(delegate.name, version=delegate.version, schema_url=delegate.schema_url)
        self.delegate = delegate
        self._guard = guard
        self._aggregated = aggregated

    def _filter(self, name: str) -> _Filter:
        # Bind the instrument's state once: recording then skips the name lookup.
        return self._guard.instrument(name).filter

    def create_counter(self, name: str, unit: str = "", description: str = "") -> Counter:
        return _GuardedCounter(self.delegate.create_counter(name, unit, description), self._filter(name))

    def create_up_down_counter(self, name: str, unit: str = "", description: str = "") -> UpDownCounter:
        aggregated = self._aggregated
        if aggregated is not None and name in aggregated.keys:
            up_down = aggregated.registry.up_down_sum(name, unit=unit, description=description, scope=self._scope())
            return _AggregatedUpDownCounter(up_down, self._guard.instrument(name), aggregated.keys[name])
        return _GuardedUpDownCounter(self.delegate.create_up_down_counter(name, unit, description), self._filter(name))

    def _scope(self) -> _aggregate.Scope:
        return (self.name, self.version)

    def create_histogram(
        self,
        name: str,
        unit: str = "",
        description: str = "",
        *,
        explicit_bucket_boundaries_advisory: Sequence[float] | None = None,
    ) -> Histogram:
        aggregated = self._aggregated
        if aggregated is not None and name in aggregated.keys:
            bounds = explicit_bucket_boundaries_advisory or sc.DEFAULT_HISTOGRAM_BUCKETS
            histogram = aggregated.registry.histogram(
                name, unit=unit, description=description, bounds=bounds, scope=self._scope()
            )
            return _AggregatedHistogram(histogram, self._guard.instrument(name), aggregated.keys[name])
        delegate = self.delegate.create_histogram(
            name, unit, description, explicit_bucket_boundaries_advisory=explicit_bucket_boundaries_advisory
        )
        return _GuardedHistogram(delegate, self._filter(name))

    def create_gauge(self, name: str, unit: str = "", description: str = "") -> Gauge:
        return _GuardedGauge(self.delegate.create_gauge(name, unit, description), self._filter(name))

    def create_observable_counter(
        self, name: str, callbacks: Sequence[CallbackT] | None = None, unit: str = "", description: str = ""
    ) -> ObservableCounter:
        callbacks = _guard_callbacks(callbacks, self._filter(name))
        return _GuardedObservableCounter(self.delegate.create_observable_counter(name, callbacks, unit, description))

    def create_observable_up_down_counter(
        self, name: str, callbacks: Sequence[CallbackT] | None = None, unit: str = "", description: str = ""
    ) -> ObservableUpDownCounter:
        callbacks = _guard_callbacks(callbacks, self._filter(name))
        delegate = self.delegate.create_observable_up_down_counter(name, callbacks, unit, description)
        return _GuardedObservableUpDownCounter(delegate)

    def create_observable_gauge(
        self, name: str, callbacks: Sequence[CallbackT] | None = None, unit: str = "", description: str = ""
    ) -> ObservableGauge:
        callbacks = _guard_callbacks(callbacks, self._filter(name))
        return _GuardedObservableGauge(self.delegate.create_observable_gauge(name, callbacks, unit, description))


@dataclass(frozen=True)
class Aggregated:
    """Instruments recorded into obskit's own aggregation instead of the SDK's (hot HTTP metrics).

    ``keys`` maps an instrument name to the attribute keys it keeps (None: all), as an SDK View would.
    """

    registry: _aggregate.Registry
    keys: Mapping[str, frozenset[str] | None]


class GuardedMeterProvider(MeterProvider):
    """A ``MeterProvider`` whose instruments pass every attribute set through a :class:`LabelGuard`.

    It also registers ``obskit.cardinality.overflow`` (unit ``{measurement}``, attributes ``obskit.metric``
    and ``obskit.attribute``) on the delegate, unguarded.

    Args:
        delegate: The provider that does the work (the SDK's, or a no-op one).
        guard: The guard; a default ``LabelGuard()`` if omitted.

    Example:
        >>> from opentelemetry.metrics import NoOpMeterProvider
        >>> provider = GuardedMeterProvider(NoOpMeterProvider(), LabelGuard(max_values=50))
        >>> provider.get_meter("my.lib").create_counter("jobs").add(1, {"queue": "a"})
    """

    def __init__(
        self, delegate: MeterProvider, guard: LabelGuard | None = None, aggregated: Aggregated | None = None
    ) -> None:
        self.delegate = delegate
        self.guard = guard if guard is not None else LabelGuard()
        self.aggregated = aggregated
        with _safety.swallow_errors("GuardedMeterProvider.overflow_counter"):
            # An ObservableCounter rather than a Counter.add() per replacement: the overflow path then costs a
            # dict increment under the guard's lock instead of a full SDK measurement (~µs), which matters
            # precisely when an attack sends only new values; the SDK reads the totals once per export.
            delegate.get_meter(sc.INSTRUMENTATION_NAME, __version__).create_observable_counter(
                sc.CARDINALITY_OVERFLOW,
                callbacks=[self._observe_overflow],
                unit=sc.UNIT_MEASUREMENT,
                description="Metric attribute values replaced by _OTHER, or keys dropped, by the cardinality guard.",
            )

    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> Meter:
        """A guarded ``Meter`` over the delegate's meter of the same scope."""
        return _GuardedMeter(
            self.delegate.get_meter(name, version, schema_url, attributes), self.guard, self.aggregated
        )

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Forward to the delegate when it has ``force_flush`` (the SDK's does)."""
        flush = getattr(self.delegate, "force_flush", None)
        return bool(flush(timeout_millis)) if flush is not None else True

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        """Forward to the delegate when it has ``shutdown`` (the SDK's does)."""
        shutdown = getattr(self.delegate, "shutdown", None)
        if shutdown is not None:
            shutdown(timeout_millis)

    def _observe_overflow(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {sc.ATTR_OBSKIT_METRIC: metric, sc.ATTR_OBSKIT_ATTRIBUTE: key})
            for (metric, key), count in self.guard.overflow_counts().items()
        ]


# ---------------------------------------------------------------------------------------------------------------
# The current provider, for obskit.metrics: its instruments exist before init() and rebind whenever the
# generation changes (init(), a test's re-init, testing._reset()).

_install_lock = threading.Lock()
_current: GuardedMeterProvider | None = None
# Read without a lock by obskit.metrics on every record: an int compare is the whole cost of "still bound?".
_generation = 0


def install(provider: GuardedMeterProvider | None) -> None:
    """Make ``provider`` the one ``obskit.metrics`` instruments record into (None: record nothing)."""
    global _current, _generation
    with _install_lock:
        _current = provider
        _generation += 1


def current() -> GuardedMeterProvider | None:
    """The installed provider, None before ``init()`` and after ``shutdown()``."""
    return _current


def generation() -> int:
    """Incremented by every :func:`install`."""
    return _generation


def snapshot() -> tuple[int, GuardedMeterProvider | None]:
    """The generation and the provider, read together."""
    with _install_lock:
        return _generation, _current
