from __future__ import annotations

import logging

import pytest

from obskit import ConfigError
from obskit._config import SETTINGS_TABLE, load_settings


def _error(env: dict[str, str] | None = None, **explicit: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(env or {}, **explicit)
    return str(info.value)


def test_defaults():
    """With an empty environment every setting takes its documented default."""
    settings = load_settings({})
    assert settings.service_name == "unknown_service"
    assert settings.protocol == "grpc"
    assert settings.timeout == 10.0
    assert settings.traces_exporter == settings.metrics_exporter == settings.logs_exporter == "otlp"
    assert settings.sampler == "parentbased_always_on"
    assert settings.max_label_values == 100
    assert settings.export_buffer_bytes == 64 * 1024 * 1024
    assert settings.shutdown_timeout == 5.0
    assert settings.metric_export_interval == 60.0
    assert all(source == "default" for source in settings.sources.values())


def test_precedence_argument_over_env_over_default():
    """An explicit argument beats the environment, which beats the default."""
    env = {"OTEL_SERVICE_NAME": "from-env", "OBSKIT_MAX_LABEL_VALUES": "7"}
    settings = load_settings(env, service_name="from-arg")
    assert settings.service_name == "from-arg"
    assert settings.sources["service_name"] == "argument"
    assert settings.max_label_values == 7
    assert settings.sources["max_label_values"] == "environment"
    assert settings.sources["protocol"] == "default"


def test_empty_string_means_unset():
    """An empty variable or argument falls through to the next source."""
    settings = load_settings({"OTEL_SERVICE_NAME": "", "OTEL_EXPORTER_OTLP_PROTOCOL": "  "}, model_name="")
    assert settings.service_name == "unknown_service"
    assert settings.protocol == "grpc"
    assert settings.model_name is None


def test_milliseconds_in_env_seconds_in_arguments():
    """OTEL_* durations are milliseconds; init() arguments are seconds."""
    assert load_settings({"OTEL_EXPORTER_OTLP_TIMEOUT": "2500"}).timeout == 2.5
    assert load_settings({}, timeout=2.5).timeout == 2.5
    assert load_settings({"OTEL_METRIC_EXPORT_INTERVAL": "1500"}).metric_export_interval == 1.5
    assert load_settings({}, metric_export_interval=3).metric_export_interval == 3


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"},
            "OTEL_EXPORTER_OTLP_TIMEOUT='soon': expected an integer between 0 and 3600000 (milliseconds)",
        ),
        (
            {"OTEL_EXPORTER_OTLP_TIMEOUT": "-5"},
            "OTEL_EXPORTER_OTLP_TIMEOUT='-5': expected an integer between 0 and 3600000",
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "1.5x"},
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT='1.5x': expected an integer",
        ),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "bogus"},
            "OTEL_EXPORTER_OTLP_PROTOCOL='bogus': expected one of 'grpc', 'http/protobuf'",
        ),
        (
            {"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL='http/json': expected one of 'grpc', 'http/protobuf'",
        ),
        (
            {"OTEL_TRACES_SAMPLER": "sometimes"},
            "OTEL_TRACES_SAMPLER='sometimes': expected one of 'always_on', 'always_off', 'traceidratio', 'parentbased_always_on', 'parentbased_always_off', 'parentbased_traceidratio'",
        ),
        ({"OTEL_TRACES_SAMPLER_ARG": "1.5"}, "OTEL_TRACES_SAMPLER_ARG='1.5': expected a number between 0 and 1"),
        ({"OTEL_TRACES_SAMPLER_ARG": "-0.1"}, "OTEL_TRACES_SAMPLER_ARG='-0.1': expected a number between 0 and 1"),
        ({"OTEL_TRACES_SAMPLER_ARG": "half"}, "OTEL_TRACES_SAMPLER_ARG='half': expected a number between 0 and 1"),
        ({"OTEL_TRACES_SAMPLER_ARG": "nan"}, "OTEL_TRACES_SAMPLER_ARG='nan': expected a number between 0 and 1"),
        (
            {"OTEL_RESOURCE_ATTRIBUTES": "team=ml,broken"},
            "OTEL_RESOURCE_ATTRIBUTES='team=ml,broken': entry 2 is not key=value",
        ),
        ({"OTEL_RESOURCE_ATTRIBUTES": "=x"}, "OTEL_RESOURCE_ATTRIBUTES='=x': entry 1 is not key=value"),
        (
            {"OTEL_TRACES_EXPORTER": "jaeger"},
            "OTEL_TRACES_EXPORTER='jaeger': expected one of 'otlp', 'console', 'none'",
        ),
        (
            {"OTEL_METRICS_EXPORTER": "statsd"},
            "OTEL_METRICS_EXPORTER='statsd': expected one of 'otlp', 'console', 'none', 'prometheus'",
        ),
        ({"OTEL_LOGS_EXPORTER": "file"}, "OTEL_LOGS_EXPORTER='file': expected one of 'otlp', 'console', 'none'"),
        ({"OTEL_SDK_DISABLED": "maybe"}, "OTEL_SDK_DISABLED='maybe': expected 'true' or 'false'"),
        (
            {"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"},
            "OTEL_EXPORTER_OTLP_COMPRESSION='zstd': expected one of 'gzip', 'none'",
        ),
        (
            {"OTEL_METRIC_EXPORT_INTERVAL": "10"},
            "OTEL_METRIC_EXPORT_INTERVAL='10': expected an integer >= 100 (milliseconds)",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://collector:4317"},
            "OTEL_EXPORTER_OTLP_ENDPOINT='ftp://collector:4317': expected an http:// or https:// URL",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://:4317"},
            "OTEL_EXPORTER_OTLP_ENDPOINT='http://:4317': expected a URL with a host",
        ),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
            "OTEL_EXPORTER_OTLP_ENDPOINT='collector:4318': the http/protobuf protocol needs a URL with a scheme",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "collector:4318/v1/logs",
            },
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT='collector:4318/v1/logs': the http/protobuf protocol needs a URL with a scheme",
        ),
        (
            {"OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/ca.pem"},
            "OTEL_EXPORTER_OTLP_CERTIFICATE='/nonexistent/ca.pem': expected the path of a readable PEM file",
        ),
        (
            {"OTEL_PROPAGATORS": "tracecontext,b3"},
            "OTEL_PROPAGATORS='tracecontext,b3': expected a comma-separated list of 'tracecontext', 'baggage', 'none'",
        ),
        (
            {"OTEL_EXPORTER_PROMETHEUS_PORT": "99999"},
            "OTEL_EXPORTER_PROMETHEUS_PORT='99999': expected an integer between 0 and 65535",
        ),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "0"}, "OTEL_BSP_MAX_QUEUE_SIZE='0': expected an integer >= 1"),
        (
            {"OBSKIT_MAX_LABEL_VALUES": "lots"},
            "OBSKIT_MAX_LABEL_VALUES='lots': expected an integer between 1 and 100000",
        ),
        ({"OBSKIT_MAX_LABEL_VALUES": "0"}, "OBSKIT_MAX_LABEL_VALUES='0': expected an integer between 1 and 100000"),
        (
            {"OBSKIT_EXPORT_BUFFER_BYTES": "64 parsecs"},
            "OBSKIT_EXPORT_BUFFER_BYTES='64 parsecs': expected a size in bytes >= 1 MiB",
        ),
        ({"OBSKIT_EXPORT_BUFFER_BYTES": "100"}, "OBSKIT_EXPORT_BUFFER_BYTES='100': expected a size in bytes >= 1 MiB"),
        (
            {"OBSKIT_SHUTDOWN_TIMEOUT": "forever"},
            "OBSKIT_SHUTDOWN_TIMEOUT='forever': expected a number between 0 and 300",
        ),
        (
            {"OBSKIT_EXCLUDED_URLS": "^/health(,^/ok$"},
            "OBSKIT_EXCLUDED_URLS='^/health(,^/ok$': pattern '^/health(' is not a valid regular expression",
        ),
        (
            {"OBSKIT_LOG_LEVEL": "LOUD"},
            "OBSKIT_LOG_LEVEL='LOUD': expected one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'",
        ),
        ({"OBSKIT_AUTO_INSTRUMENT": "sure"}, "OBSKIT_AUTO_INSTRUMENT='sure': expected 'true' or 'false'"),
    ],
)
def test_bad_environment_value_names_variable_value_and_accepted(env: dict[str, str], expected: str):
    """Every malformed variable fails with a ConfigError naming it, its value and what is accepted."""
    assert expected in _error(env)


@pytest.mark.parametrize(
    ("explicit", "expected"),
    [
        ({"protocol": "bogus"}, "init(protocol=...)='bogus': expected one of 'grpc', 'http/protobuf'"),
        ({"sampler_arg": 2}, "init(sampler_arg=...)=2: expected a number between 0 and 1"),
        ({"timeout": "slow"}, "init(timeout=...)='slow': expected a number between 0 and 3600 (seconds)"),
        ({"max_label_values": True}, "init(max_label_values=...)=True: expected an integer"),
        ({"resource_attributes": {"team": 3}}, "init(resource_attributes=...)={'team': 3}: expected a mapping"),
    ],
)
def test_bad_argument_names_argument(explicit: dict[str, object], expected: str):
    """A malformed init() argument is reported as the argument, not the variable."""
    assert expected in _error(**explicit)


def test_unknown_argument_lists_accepted():
    """A misspelt argument fails fast and lists the accepted ones."""
    message = _error(servce_name="x")
    assert "unknown argument(s) servce_name" in message
    assert "service_name" in message


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20s3cr3t-token,broken"},
        {"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-api-key=s3cr3t-token,=s3cr3t-token"},
    ],
)
def test_malformed_headers_never_show_the_secret(env: dict[str, str]):
    """A malformed header variable is reported without its value."""
    message = _error(env)
    assert "s3cr3t" not in message
    assert "***" in message
    assert "is not key=value" in message


def test_password_in_endpoint_is_masked():
    """A password in an endpoint URL is hidden in errors and in repr."""
    message = _error({"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://user:hunter2@collector:4317"})
    assert "hunter2" not in message
    assert "ftp://***@collector:4317" in message
    settings = load_settings(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:hunter2@collector:4318",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }
    )
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        # No scheme: the http/protobuf error and the gRPC one both show the endpoint, masked.
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "user:hunter2@collector:4318",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            "'***@collector:4318': the http/protobuf protocol needs a URL with a scheme",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "user:hunter2@collector:4317"}, "a gRPC endpoint cannot carry a user"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://user:hunter2@c:4317"}, "'http://***@c:4317': a gRPC endpoint"),
        # A malformed port: a ConfigError (urlsplit raises ValueError when the port is read), the password masked.
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://user:hunter2@collector:abc"}, "expected a port number from 0 to"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://user:hunter2@collector:99999"}, "'http://***@collector:99999'"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://user:hunter2@collector:abc"}, "expected an http:// or https:// URL"),
    ],
)
def test_endpoint_credentials_and_ports_fail_at_init_masked(env: dict[str, str], expected: str):
    """Bad endpoints fail at init() with a ConfigError that never shows the URL's password."""
    message = _error(env)
    assert "hunter2" not in message
    assert expected in message


@pytest.mark.parametrize("endpoint", ["collector:99999", "true false", "%%%", "http://coll ector:4317", "c:43\x0017"])
def test_malformed_endpoints_fail_at_init(endpoint: str):
    """An endpoint gRPC or HTTP could never dial is refused at init() instead of failing every export."""
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=" in _error({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})


@pytest.mark.parametrize(
    "endpoint", ["collector:4317", "http://[::1]:4317", "https://otel.example.com", "10.0.0.7:4317"]
)
def test_well_formed_endpoints_are_accepted(endpoint: str):
    assert load_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}).values["endpoint"] == endpoint


def test_password_over_http_protobuf_is_accepted_and_masked():
    """HTTP sends a URL's user and password as basic auth: accepted, and masked wherever shown."""
    settings = load_settings(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://user:hunter2@c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    )
    assert settings.endpoint_for("traces") == "http://user:hunter2@c:4318/v1/traces"
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ("authorization=Bearer%0As3cr3t", "the value of header 1 has characters a header cannot carry"),
        ("x-tenant=ml,authorization=Bearer%E2%82%ACs3cr3t", "the value of header 2 has characters"),
        ("authorization=%20s3cr3t", "surrounding whitespace"),
        ("bad key=s3cr3t", "the name of header 1 is not a valid HTTP header name"),
        # A colon where the equals sign belongs puts the secret in the name: the name is not shown either.
        ("authorization:Bearer s3cr3t=x", "the name of header 1 is not a valid HTTP header name"),
    ],
)
def test_headers_a_transport_would_refuse_fail_at_init(headers: str, expected: str):
    """A header gRPC or HTTP would refuse at every export fails init(), naming its position, never its text."""
    for variable in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_LOGS_HEADERS"):
        message = _error({variable: headers})
        assert message.startswith(f"{variable}=***: ")
        assert expected in message
        assert "s3cr3t" not in message


def test_header_names_are_lowercased():
    """gRPC metadata keys must be lowercase and HTTP names are case-insensitive: one form for both."""
    settings = load_settings({"OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20s3cr3t,X-Tenant=ml"})
    assert settings.headers == {"authorization": "Bearer s3cr3t", "x-tenant": "ml"}
    assert load_settings({}, headers={"X-Api-Key": "k"}).headers == {"x-api-key": "k"}
    assert "headers=...)=***: expected a mapping" in _error(headers=["authorization=s3cr3t"])


def test_integer_arguments_refuse_fractions_and_blank_arguments_mean_unset():
    assert "init(max_label_values=...)=2.9: expected an integer" in _error(max_label_values=2.9)
    assert load_settings({}, max_label_values=3.0).values["max_label_values"] == 3
    settings = load_settings({"OTEL_SERVICE_NAME": "from-env"}, service_name="   ")
    assert settings.values["service_name"] == "from-env"
    assert settings.sources["service_name"] == "environment"


def test_secret_texts_and_scrub():
    """What `obskit check` scrubs from third-party messages: header values and a URL's userinfo and its parts."""
    from obskit._config import scrub, secret_texts

    settings = load_settings(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://us%40er:hun%21ter2@c:4318",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20s3cr3t",
        }
    )
    secrets = secret_texts(settings)
    assert set(secrets) == {"Bearer s3cr3t", "us%40er:hun%21ter2", "us%40er", "us@er", "hun%21ter2", "hun!ter2"}
    assert secrets[0] == "us%40er:hun%21ter2"  # longest first: a part never splits a whole
    text = "dial us%40er:hun%21ter2@c failed; user us@er, password hun!ter2, sent Bearer s3cr3t"
    assert scrub(text, secrets) == "dial ***@c failed; user ***, password ***, sent ***"


def test_headers_parsed_and_masked_in_repr():
    """Headers are percent-decoded, merged per signal, and masked in repr."""
    settings = load_settings(
        {
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20s3cr3t,x-tenant=ml",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-tenant=traces",
        }
    )
    assert settings.headers == {"authorization": "Bearer s3cr3t", "x-tenant": "ml"}
    assert settings.headers_for("traces") == {"authorization": "Bearer s3cr3t", "x-tenant": "traces"}
    assert settings.headers_for("metrics") == {"authorization": "Bearer s3cr3t", "x-tenant": "ml"}
    text = repr(settings)
    assert "s3cr3t" not in text
    assert "'authorization': '***'" in text


def test_resource_attributes_percent_decoded():
    """OTEL_RESOURCE_ATTRIBUTES values are percent-decoded."""
    settings = load_settings({"OTEL_RESOURCE_ATTRIBUTES": "team=fraud%20ml, region=eu-west-1"})
    assert settings.resource_attributes == {"team": "fraud ml", "region": "eu-west-1"}


@pytest.mark.parametrize(
    ("env", "signal", "expected"),
    [
        ({}, "traces", "http://localhost:4317"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "traces", "http://localhost:4318/v1/traces"),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"},
            "logs",
            "http://c:4318/v1/logs",
        ),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/base"},
            "metrics",
            "http://c:4318/base/v1/metrics",
        ),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:9/custom"},
            "traces",
            "http://c:9/custom",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, "metrics", "http://c:4317"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"}, "metrics", "collector:4317"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, "traces", "http://localhost:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, "metrics", "http://localhost:4317"),
    ],
)
def test_endpoint_resolution_follows_otel_rules(env: dict[str, str], signal: str, expected: str):
    """The base HTTP endpoint gets /v1/<signal> appended; a per-signal endpoint is used verbatim."""
    assert load_settings(env).endpoint_for(signal) == expected


def test_log_level_and_lists():
    """Levels, lists and regex lists parse from their text forms."""
    settings = load_settings(
        {
            "OBSKIT_LOG_LEVEL": "warning",
            "OBSKIT_DENIED_LABELS": "tenant.id, customer.id",
            "OBSKIT_EXCLUDED_URLS": "^/a$,^/b",
        }
    )
    assert settings.log_level == logging.WARNING
    assert settings.denied_labels == ("tenant.id", "customer.id")
    assert settings.excluded_urls == ("^/a$", "^/b")


def test_export_buffer_sizes():
    """Buffer sizes accept bytes and binary/decimal suffixes."""
    assert load_settings({"OBSKIT_EXPORT_BUFFER_BYTES": "128MiB"}).export_buffer_bytes == 128 * 1024**2
    assert load_settings({"OBSKIT_EXPORT_BUFFER_BYTES": "2097152"}).export_buffer_bytes == 2 * 1024**2
    assert load_settings({}, export_buffer_bytes="1GiB").export_buffer_bytes == 1024**3


def test_every_setting_is_documented_in_the_table():
    """Each row of the table has an env variable (or is argument-only), a type, a doc and an example."""
    names = [s.name for s in SETTINGS_TABLE]
    assert len(names) == len(set(names))
    for setting in SETTINGS_TABLE:
        assert setting.doc, setting.name
        assert setting.type_doc, setting.name
        assert setting.example, setting.name
        assert setting.env is None or setting.env.startswith(("OTEL_", "OBSKIT_"))


def test_init_signature_matches_the_table():
    """obskit.init() accepts exactly the settings marked as arguments."""
    import inspect

    import obskit

    parameters = set(inspect.signature(obskit.init).parameters)
    assert parameters == {s.name for s in SETTINGS_TABLE if s.argument}


def test_a_quantifier_cut_by_the_list_comma_is_refused():
    """'{1,3}' in OBSKIT_EXCLUDED_URLS would split one pattern into two that each compile: a ConfigError instead."""
    message = _error({"OBSKIT_EXCLUDED_URLS": "^/healthz$,^/v[0-9]{1,3}/status$"})
    assert message.startswith("OBSKIT_EXCLUDED_URLS='^/healthz$,^/v[0-9]{1,3}/status$': a comma inside a {m,n}")
    assert load_settings({"OBSKIT_EXCLUDED_URLS": "^/a{2},^/b"}).values["excluded_urls"] == ("^/a{2}", "^/b")
    listed = load_settings({}, excluded_urls=["^/v[0-9]{1,3}/status$"]).values["excluded_urls"]
    assert listed == ("^/v[0-9]{1,3}/status$",)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "99999999999999"}, "expected an integer between 0 and 3600000 (milliseconds)"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "team=ml,k=%ZZ"}, "entry 2 has a '%' that does not start a percent-encoded"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "k=%E2%82"}, "entry 1 does not decode to UTF-8"),
    ],
)
def test_values_the_exporters_or_the_specification_refuse_fail_at_init(env: dict[str, str], expected: str):
    """A timeout the HTTP exporter cannot use, and resource attributes the specification says to discard."""
    assert expected in _error(env)
    assert load_settings({"OTEL_RESOURCE_ATTRIBUTES": "a=b%20c,d=%C3%A9"}).resource_attributes == {"a": "b c", "d": "é"}
