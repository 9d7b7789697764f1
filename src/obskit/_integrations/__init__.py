"""``instrument_app(app)`` and auto-instrumentation of Flask and FastAPI apps created after ``init()``.

Policy (sentry's ``DidNotEnable``): during auto-detection a framework or contrib package that is missing is skipped
silently; an explicit ``instrument_app()`` raises ``IntegrationUnavailable`` with the install hint.
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from .._safety import swallow_errors, warn_once
from ..exceptions import IntegrationUnavailable

_logger = logging.getLogger("obskit")
_AppT = TypeVar("_AppT")

# framework module -> obskit integration module
_FRAMEWORKS = {"flask": "flask", "fastapi": "fastapi"}


@dataclass(frozen=True)
class Target:
    """What apps are instrumented with: the providers ``init()`` built and the excluded URL regexes."""

    tracer_provider: Any
    meter_provider: Any
    excluded_urls: tuple[str, ...]
    auto: bool
    # "obskit": the integration's lean middleware; "contrib": the OpenTelemetry contrib instrumentor.
    middleware: str = "obskit"


_target: Target | None = None
_pending: weakref.WeakSet[Any] = weakref.WeakSet()
# Every app obskit instrumented, with the target it was instrumented for: a later init() (a test's
# capture_telemetry() after the app module's own init(), say) moves them to its own providers.
_instrumented: weakref.WeakKeyDictionary[Any, tuple[str, Target]] = weakref.WeakKeyDictionary()
_hooks_registered: set[str] = set()
_lock = threading.Lock()


def _integration(framework: str) -> ModuleType:
    import importlib

    return importlib.import_module(f"{__name__}.{_FRAMEWORKS[framework]}")


def _framework_of(app: Any) -> str | None:
    # Only frameworks already imported can have made this app; nothing new is imported to find out.
    for framework in _FRAMEWORKS:
        if framework in sys.modules and _integration(framework).is_app(app):
            return framework
    return None


def _instrument(app: Any, framework: str, target: Target) -> bool:
    """Instrument ``app`` for ``target``; an app obskit instrumented for an earlier target is moved over."""
    previous = _instrumented.get(app)
    if previous is not None:
        if previous[1] is target:
            return False
        if not _integration(framework).uninstrument(app, previous[1].middleware):
            del _instrumented[app]  # left as it is, for good: warned once
            warn_once(
                f"reinstrument:{id(app)}",
                f"obskit: {type(app).__name__} app {getattr(app, 'name', '')!r} keeps the providers of the earlier "
                "init(): its wsgi_app was wrapped after obskit instrumented it. Create the app (or wrap it) after "
                "init() to have it report to the new one.",
            )
            return False
        del _instrumented[app]
    elif getattr(app, "_is_instrumented_by_opentelemetry", False):  # instrumented by contrib, outside obskit
        return False
    _integration(framework).instrument(
        app, target.tracer_provider, target.meter_provider, target.excluded_urls, target.middleware
    )
    _instrumented[app] = (framework, target)
    return True


def instrument_app(app: _AppT) -> _AppT:
    """Instrument a Flask or FastAPI app, typically one created before ``init()``.

    Instrumenting the same app twice is a no-op. Called before ``init()``, the app is remembered and
    instrumented by ``init()``; under ``OTEL_SDK_DISABLED=true`` nothing happens.

    Args:
        app: a ``flask.Flask`` or ``fastapi.FastAPI`` instance.

    Returns:
        The same app, for chaining.

    Raises:
        IntegrationUnavailable: the framework's obskit extra is not installed (the message gives the
            ``pip install 'obskit[...]'`` command).
        TypeError: the object is neither a Flask nor a FastAPI app.

    Example:
        >>> app = FastAPI()            # doctest: +SKIP
        >>> obskit.init(service_name="fraud-scorer")   # doctest: +SKIP
        >>> obskit.instrument_app(app)  # doctest: +SKIP
    """
    framework = _framework_of(app)
    if framework is None:
        raise TypeError(f"obskit.instrument_app() expects a Flask or FastAPI app, got {type(app).__name__}")
    module = _integration(framework)
    if not _contrib_available(framework):
        raise IntegrationUnavailable(f"{framework} instrumentation is not installed: {module.HINT}")
    with _lock:
        target = _target
        if target is None:
            _pending.add(app)
            return app
    _instrument(app, framework, target)
    return app


def _contrib_available(framework: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(f"opentelemetry.instrumentation.{framework}") is not None


def _after_app_init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    result = wrapped(*args, **kwargs)
    target = _target
    if target is not None and target.auto:
        with swallow_errors("auto-instrumentation"):
            framework = _framework_of(instance)
            if framework is not None:
                _instrument(instance, framework, target)
    return result


def _register_hook(framework: str) -> None:
    import wrapt

    def on_import(_module: ModuleType) -> None:
        with swallow_errors("auto-instrumentation"):
            _integration(framework).patch_class(_after_app_init)

    wrapt.register_post_import_hook(on_import, framework)


def configure(target: Target) -> None:
    """Make ``target`` current: pending apps are instrumented, and (if auto) apps created from now on."""
    global _target
    with _lock:
        _target = target
        pending = list(_pending)
        _pending.clear()
        # Apps instrumented for an earlier init() would keep sending to its shut-down providers.
        pending += [app for app, (_framework, earlier) in list(_instrumented.items()) if earlier is not target]
        if target.auto:
            for framework in _FRAMEWORKS:
                if framework not in _hooks_registered and _contrib_available(framework):
                    _hooks_registered.add(framework)
                    _register_hook(framework)
    for app in pending:
        found = _framework_of(app)
        if found is not None:
            try:
                _instrument(app, found, target)
            except IntegrationUnavailable as exc:
                warn_once(f"pending:{found}", str(exc))


def unconfigure() -> None:
    global _target
    with _lock:
        _target = None
