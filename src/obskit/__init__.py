"""obskit: production-grade OpenTelemetry for Flask and FastAPI model servers in one call."""

from __future__ import annotations

from ._version import __version__
from .exceptions import ConfigError, IntegrationUnavailable, ObskitError, ObskitWarning

__all__ = ["ConfigError", "IntegrationUnavailable", "ObskitError", "ObskitWarning", "__version__"]
