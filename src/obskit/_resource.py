"""The ``Resource`` every signal carries: service identity, a per-process instance id, the SDK's own attributes."""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME, SERVICE_VERSION

from ._config import Settings

SERVICE_INSTANCE_ID = "service.instance.id"
DEPLOYMENT_ENVIRONMENT_NAME = "deployment.environment.name"
PROCESS_PID = "process.pid"


def build_resource(settings: Settings) -> Resource:
    """Resource attributes, lowest precedence first: SDK defaults, OTEL_RESOURCE_ATTRIBUTES, obskit's settings.

    ``service.name`` from an argument or OTEL_SERVICE_NAME wins over the one in OTEL_RESOURCE_ATTRIBUTES, as
    the OpenTelemetry specification requires; the built-in default only applies when neither gives one.
    """
    attributes: dict[str, Any] = dict(_sdk_defaults().attributes)
    attributes.update(settings.resource_attributes)
    if settings.sources["service_name"] != "default" or SERVICE_NAME not in attributes:
        attributes[SERVICE_NAME] = settings.service_name
    if settings.service_version:
        attributes[SERVICE_VERSION] = settings.service_version
    if settings.environment:
        attributes[DEPLOYMENT_ENVIRONMENT_NAME] = settings.environment
    attributes[SERVICE_INSTANCE_ID] = new_instance_id()
    attributes[PROCESS_PID] = os.getpid()
    return Resource(attributes)


def _sdk_defaults() -> Resource:
    # telemetry.sdk.language/name/version, without the env detectors (obskit parsed the env itself).
    from opentelemetry.sdk.resources import _DEFAULT_RESOURCE

    return _DEFAULT_RESOURCE


def new_instance_id() -> str:
    """The SDK's per-process instance id, so that the SDK's own fork handling renews the same identity."""
    from opentelemetry.sdk.resources import ServiceInstanceIdResourceDetector

    return str(ServiceInstanceIdResourceDetector().detect().attributes[SERVICE_INSTANCE_ID])


def refresh_after_fork(providers: list[Any]) -> None:
    """Give a forked worker its own ``process.pid`` (the SDK's providers renew ``service.instance.id`` themselves).

    Each SDK provider merges its process-dependent detectors into its resource in its own at-fork hook, registered
    before obskit's; ``process.pid`` is not among them, so it is merged here the same way.
    """
    pid = Resource({PROCESS_PID: os.getpid()})
    for provider in providers:
        update = getattr(provider, "_update_resource", None)
        if update is not None:
            update(pid)
