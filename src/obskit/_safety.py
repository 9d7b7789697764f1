"""Never hurt the host: swallow and count telemetry-internal errors, warn once."""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from .exceptions import ObskitWarning

_logger = logging.getLogger("obskit")

_lock = threading.Lock()
_internal_errors = 0
_logged: set[str] = set()
_warned: set[str] = set()
# Our own test suite turns this on so that a bug in obskit fails the test instead of being counted.
_reraise = False


def set_reraise(value: bool) -> bool:
    """Re-raise internal errors instead of swallowing them (tests only); returns the previous value."""
    global _reraise
    previous, _reraise = _reraise, value
    return previous


def internal_error_count() -> int:
    return _internal_errors


def record_internal_error(where: str, exc: BaseException) -> None:
    """Count an internal failure and log it once per place, without its arguments (they may hold secrets)."""
    global _internal_errors
    with _lock:
        _internal_errors += 1
        first = where not in _logged
        _logged.add(where)
    if first:
        _logger.warning(
            "obskit internal error in %s: %s (further ones are counted, not logged)", where, type(exc).__name__
        )


@contextmanager
def swallow_errors(where: str) -> Iterator[None]:
    """Run telemetry code; an exception is counted in ``obskit.internal_errors`` and logged once, never raised."""
    try:
        yield
    except Exception as exc:
        record_internal_error(where, exc)
        if _reraise:
            raise


def warn_once(key: str, message: str, *, stacklevel: int = 3) -> None:
    """Emit an ``ObskitWarning`` the first time ``key`` is seen in this process."""
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(message, ObskitWarning, stacklevel=stacklevel)


def log_once(key: str, message: str, *args: object) -> None:
    """Log a warning the first time ``key`` is seen in this process."""
    with _lock:
        if key in _logged:
            return
        _logged.add(key)
    _logger.warning(message, *args)


def _reset() -> None:
    global _internal_errors
    with _lock:
        _internal_errors = 0
        _logged.clear()
        _warned.clear()
