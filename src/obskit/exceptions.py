"""Exceptions and warnings raised by obskit.

Hierarchy::

    Exception
     └── ObskitError
          ├── ConfigError (also a ValueError)     bad configuration, raised by init() and the CLI
          └── IntegrationUnavailable              a framework extra is not installed
    UserWarning
     └── ObskitWarning                            misuse that obskit can survive
"""

from __future__ import annotations

__all__ = ["ConfigError", "IntegrationUnavailable", "ObskitError", "ObskitWarning"]


class ObskitError(Exception):
    """Base class of every error obskit raises."""


class ConfigError(ObskitError, ValueError):
    """Invalid configuration: names the variable or argument, the bad value and what is accepted.

    Secret values (OTLP header values, passwords in URLs) are never part of the message.
    """


class IntegrationUnavailable(ObskitError):
    """A framework integration was asked for but its extra is not installed."""


class ObskitWarning(UserWarning):
    """Misuse obskit can survive, such as a second ``init()`` with different arguments."""
