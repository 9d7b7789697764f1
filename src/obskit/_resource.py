"""The ``Resource`` every signal carries: service identity, a per-process instance id, the SDK's own attributes."""

from __future__ import annotations

import os
import uuid
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
    attributes: dict[str, Any] = dict(Resource.get_empty().merge(_sdk_defaults()).attributes)
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
    return str(uuid.uuid4())


def renew_instance_id(resource: Resource) -> None:
    """Give a forked worker its own identity, in place.

    The tracer, meter and logger providers (and every tracer created from them) hold this same Resource object,
    and the SDK offers no way to swap a provider's resource; rewriting the one shared object after fork is the
    only change that reaches all of them at once.
    """
    from opentelemetry.attributes import BoundedAttributes

    attributes = dict(resource.attributes)
    attributes[SERVICE_INSTANCE_ID] = new_instance_id()
    attributes[PROCESS_PID] = os.getpid()
    resource._attributes = BoundedAttributes(attributes=attributes, immutable=True)
