"""Cheap cumulative histograms for obskit's own stage metrics, collected by the SDK's metric readers.

Written here rather than recorded through the SDK instruments because one SDK ``Histogram.record()`` re-cleans
and re-hashes its attributes on every call (about 60% of a metrics-only stage call in ``bench_stage.py``),
while a decorated function's attributes are fixed: each site resolves its series once. A record is then a list
append, folded into the buckets 256 at a time, and a sampled span's exemplar one list store: no lock.
``_producer`` turns these into SDK ``MetricsData`` at collection time, so every reader (OTLP, Prometheus,
in-memory) exports them like any other histogram, exemplars included.

Pure Python on purpose: the stage decorators that record into it speak only the OpenTelemetry API.
"""

from __future__ import annotations

import itertools
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from time import time_ns
from typing import Any, Final

# Past this many attribute sets per histogram new series share one overflow series (the guard normally stops
# attribute values long before: stage attributes come from decorator arguments, not from requests).
MAX_SERIES: Final = 2000
# Measurements a series queues before folding them into its buckets (Series.record).
FOLD_AT: Final = 256
_OVERFLOW_ATTRIBUTES: Final[Mapping[str, str]] = {"_OTHER": "_OTHER"}
_OVERFLOW_KEY: Final = frozenset(_OVERFLOW_ATTRIBUTES.items())
Scope = tuple[str, "str | None"]
"""An instrumentation scope: name and version (the meter that created the instrument)."""
OWN_SCOPE: Final[Scope] = ("obskit", None)


@dataclass(frozen=True, slots=True)
class ExemplarSample:
    value: float
    time_unix_nano: int
    trace_id: int
    span_id: int


@dataclass(frozen=True, slots=True)
class SeriesSnapshot:
    attributes: Mapping[str, Any]
    count: int
    sum: float
    min: float
    max: float
    bucket_counts: tuple[int, ...]
    exemplars: tuple[ExemplarSample, ...]


class Series:
    """One attribute set of a histogram: bucket counts, sum, min, max and the last sampled exemplar per bucket."""

    __slots__ = ("_bounds", "_counts", "_exemplars", "_lock", "_max", "_min", "_pending", "_sum", "attributes")

    def __init__(self, attributes: Mapping[str, Any], bounds: Sequence[float]) -> None:
        self.attributes = attributes
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._exemplars: list[tuple[float, int, int, int] | None] = [None] * (len(bounds) + 1)
        self._sum = 0.0
        self._min = float("inf")
        self._max = float("-inf")
        self._lock = threading.Lock()
        self._pending: list[float] = []

    def record(self, value: float, trace_id: int = 0, span_id: int = 0) -> None:
        """Add one measurement; with a sampled span's ids it becomes its bucket's exemplar."""
        # No lock: the value is queued and folded in batches (_fold). list.append is atomic, and a fold deletes
        # only the items it took, so an append racing it is folded next time. The exemplar is one list store,
        # atomic too: last writer wins, as the SDK's per-bucket reservoir. This costs a third of a bisect and five
        # additions under a lock did (five to seven records per request: benchmarks/README.md, session 11).
        pending = self._pending
        pending.append(value)
        if trace_id:
            # Explicit buckets are upper-inclusive: bucket i holds (bounds[i-1], bounds[i]]. A plain tuple: a
            # frozen dataclass costs ~0.6 µs to build, per traced record.
            self._exemplars[bisect_left(self._bounds, value)] = (value, time_ns(), trace_id, span_id)
        if len(pending) >= FOLD_AT:
            self._fold()

    def _fold(self) -> None:
        with self._lock:
            self._fold_locked()

    def _fold_locked(self) -> None:
        """Add the queued measurements to the buckets, sum, min and max (the lock held)."""
        pending = self._pending
        n = len(pending)
        if not n:
            return
        chunk = pending[:n]
        del pending[:n]
        total = sum(chunk, self._sum)
        counts = self._counts
        if total != total:  # a NaN among them (or already in the sum): no order to sort by, one by one as ever
            for value in chunk:
                counts[bisect_left(self._bounds, value)] += 1
                if value < self._min:
                    self._min = value
                if value > self._max:
                    self._max = value
            self._sum = total
            return
        # Sorted, each bucket's count is a difference of two bisections: C work, not a Python loop per value.
        chunk.sort()
        below = 0
        for i, bound in enumerate(self._bounds):
            upto = bisect_right(chunk, bound)
            counts[i] += upto - below
            below = upto
        counts[-1] += n - below
        self._sum = total
        if chunk[0] < self._min:
            self._min = chunk[0]
        if chunk[-1] > self._max:
            self._max = chunk[-1]

    def snapshot(self) -> SeriesSnapshot | None:
        with self._lock:
            self._fold_locked()
            count = sum(self._counts)
            if not count:
                return None
            return SeriesSnapshot(
                self.attributes,
                count,
                self._sum,
                self._min,
                self._max,
                tuple(self._counts),
                tuple(ExemplarSample(*e) for e in self._exemplars if e is not None),
            )


class Histogram:
    """A named histogram with fixed boundaries and one :class:`Series` per attribute set."""

    __slots__ = ("_lock", "_series", "bounds", "description", "name", "scope", "unit")

    def __init__(self, name: str, unit: str, description: str, bounds: Sequence[float], scope: Scope) -> None:
        self.scope = scope
        self.name = name
        self.unit = unit
        self.description = description
        self.bounds = tuple(float(b) for b in bounds)
        self._series: dict[frozenset[tuple[str, Any]], Series] = {}
        self._lock = threading.Lock()

    def series(self, attributes: Mapping[str, Any]) -> Series:
        """The series of an attribute set (hashable values), created on first use."""
        key = frozenset(attributes.items())
        found = self._series.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._series.get(key)
            if found is None:
                if len(self._series) >= MAX_SERIES:
                    key, attributes = _OVERFLOW_KEY, _OVERFLOW_ATTRIBUTES
                    found = self._series.get(key)
                if found is None:
                    found = self._series[key] = Series(dict(attributes), self.bounds)
            return found

    def snapshots(self) -> list[SeriesSnapshot]:
        with self._lock:
            series = list(self._series.values())
        return [s for s in (one.snapshot() for one in series) if s is not None]


class UpDownSum:
    """A non-monotonic cumulative sum per attribute set (an up-down counter), reported even when back at zero."""

    __slots__ = ("_lock", "_values", "description", "name", "scope", "unit")

    def __init__(self, name: str, unit: str, description: str, scope: Scope) -> None:
        self.scope = scope
        self.name = name
        self.unit = unit
        self.description = description
        # Per attribute set: [sum of add()s, attributes, count of up()s, count of down()s].
        self._values: dict[frozenset[tuple[str, Any]], list[Any]] = {}
        self._lock = threading.Lock()

    def add(self, amount: float, attributes: Mapping[str, Any]) -> None:
        key = frozenset(attributes.items())
        with self._lock:
            self._entry_locked(key, attributes)[0] += amount

    def cell(self, attributes: Mapping[str, Any]) -> UpDownCell:
        """The sum of one attribute set, to add to without hashing the attributes again."""
        key = frozenset(attributes.items())
        with self._lock:
            return UpDownCell(self._entry_locked(key, attributes), self._lock)

    def _entry_locked(self, key: frozenset[tuple[str, Any]], attributes: Mapping[str, Any]) -> list[Any]:
        entry = self._values.get(key)
        if entry is None:
            if len(self._values) >= MAX_SERIES:
                key, attributes = _OVERFLOW_KEY, _OVERFLOW_ATTRIBUTES
                entry = self._values.get(key)
            if entry is None:
                entry = self._values[key] = [0, dict(attributes), itertools.count(), itertools.count()]
        return entry

    def snapshots(self) -> list[tuple[Mapping[str, Any], float]]:
        with self._lock:
            entries = list(self._values.values())
        # Downs read before ups: a value never dips below the truth, at worst it is one instant late.
        out = []
        for value, attributes, ups, downs in entries:
            down = count_value(downs)
            out.append((attributes, value + count_value(ups) - down))
        return out


class UpDownCell:
    """One attribute set's value in an :class:`UpDownSum`.

    ``up()`` and ``down()`` add +1 and -1 (an active request, say) as one C call each, ``next()`` on an
    ``itertools.count``, atomic under the GIL and no Python frame: ``add(±1)`` under the lock cost ~27 bytecodes
    and a frame, twice per HTTP request.
    """

    __slots__ = ("_entry", "_lock", "down", "up")

    def __init__(self, entry: list[Any], lock: threading.Lock) -> None:
        self._entry = entry
        self._lock = lock
        self.up: Callable[[], object] = entry[2].__next__
        self.down: Callable[[], object] = entry[3].__next__

    def add(self, amount: float) -> None:
        with self._lock:
            self._entry[0] += amount


def count_value(counter: itertools.count[int]) -> int:
    """The next value of an ``itertools.count()`` without taking it (its repr is ``count(N)``)."""
    return int(repr(counter)[6:-1])


class Registry:
    """The histograms of one ``init()``; ``start_time_unix_nano`` starts their cumulative series."""

    def __init__(self) -> None:
        self.start_time_unix_nano = time_ns()
        self._histograms: list[Histogram] = []
        self._sums: list[UpDownSum] = []
        self._lock = threading.Lock()

    def histogram(
        self, name: str, *, unit: str, description: str, bounds: Sequence[float], scope: Scope = OWN_SCOPE
    ) -> Histogram:
        with self._lock:
            for existing in self._histograms:
                if existing.name == name and existing.scope == scope:
                    return existing
            created = Histogram(name, unit, description, bounds, scope)
            self._histograms.append(created)
            return created

    def histograms(self) -> list[Histogram]:
        with self._lock:
            return list(self._histograms)

    def up_down_sum(self, name: str, *, unit: str, description: str, scope: Scope = OWN_SCOPE) -> UpDownSum:
        with self._lock:
            for existing in self._sums:
                if existing.name == name and existing.scope == scope:
                    return existing
            created = UpDownSum(name, unit, description, scope)
            self._sums.append(created)
            return created

    def up_down_sums(self) -> list[UpDownSum]:
        with self._lock:
            return list(self._sums)
