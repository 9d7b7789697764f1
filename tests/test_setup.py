from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time

import pytest
from opentelemetry import trace

import obskit
from obskit import ConfigError, ObskitWarning
from obskit._integrations._http import ExcludedPaths, contrib_excluded_urls, excluded_paths
from obskit.testing import OtlpReceiver

PROTOCOLS = [("grpc", "grpc_endpoint"), ("http/protobuf", "http_endpoint")]


def _init(rx: OtlpReceiver, protocol: str = "grpc", **kwargs: object) -> obskit.Handle:
    endpoint = rx.grpc_endpoint if protocol == "grpc" else rx.http_endpoint
    kwargs.setdefault("service_name", "setup-test")
    kwargs.setdefault("system_metrics", False)
    return obskit.init(endpoint=endpoint, protocol=protocol, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("protocol", "_attr"), PROTOCOLS)
def test_all_three_signals_reach_the_receiver(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, protocol: str, _attr: str
):
    """Spans, metrics and logs arrive over the real wire with the full resource."""
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=fraud%20ml,k8s.namespace.name=models")
    handle = _init(receiver, protocol, service_version="2.1", environment="staging")

    @obskit.inference(model="fraud-xgb", version="3")
    def predict(x: int) -> int:
        logging.getLogger("app").warning("scored %d", x)
        return x * 2

    with trace.get_tracer("test").start_as_current_span("request"):
        assert predict(21) == 42
    assert handle.force_flush(5)

    span = receiver.wait_for_span("inference fraud-xgb", timeout=5)
    parent = receiver.wait_for_span("request", timeout=5)
    assert span.parent_span_id == parent.span_id
    assert span.attributes == {"model.name": "fraud-xgb", "model.version": "3", "model.stage": "inference"}
    resource = span.resource
    assert resource["service.name"] == "setup-test"
    assert resource["service.version"] == "2.1"
    assert resource["deployment.environment.name"] == "staging"
    assert resource["team"] == "fraud ml"
    assert resource["k8s.namespace.name"] == "models"
    assert resource["telemetry.sdk.language"] == "python"
    assert resource["telemetry.sdk.name"] == "opentelemetry"
    assert len(resource["service.instance.id"]) == 36
    assert span.protocol == ("grpc" if protocol == "grpc" else "http")

    point = receiver.wait_for_metric("obskit.model.duration", timeout=5)
    assert point.count == 1
    assert point.attributes == {"model.name": "fraud-xgb", "model.version": "3", "model.stage": "inference"}
    assert point.resource["service.instance.id"] == resource["service.instance.id"]

    record = receiver.wait_for_log(body="scored 21", timeout=5)
    assert record.trace_id == span.trace_id
    assert record.span_id == span.span_id
    assert record.severity_text == "WARN"
    assert record.resource["service.name"] == "setup-test"


def test_second_init_returns_same_handle(receiver: OtlpReceiver):
    """A second init() returns the same handle and installs no new span processor."""
    first = _init(receiver)
    assert first.tracer_provider is not None
    processors = len(first.tracer_provider._active_span_processor._span_processors)
    second = _init(receiver)
    assert second is first
    assert len(first.tracer_provider._active_span_processor._span_processors) == processors
    with trace.get_tracer("t").start_as_current_span("once"):
        pass
    first.force_flush(5)
    receiver.wait_for_span("once", timeout=5)
    assert len(receiver.spans("once")) == 1


def test_second_init_with_other_arguments_warns_once(receiver: OtlpReceiver):
    """A second init() with different arguments warns (once) and keeps the first configuration."""
    first = _init(receiver)
    with pytest.warns(ObskitWarning, match="already called with different arguments"):
        second = _init(receiver, service_name="other")
    assert second is first
    assert second.settings.service_name == "setup-test"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _init(receiver, service_name="third")  # no second warning


def test_sdk_disabled_is_a_noop(monkeypatch: pytest.MonkeyPatch, receiver: OtlpReceiver):
    """OTEL_SDK_DISABLED=true: init() installs nothing and every obskit call works without telemetry."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    handle = _init(receiver)
    assert not handle.enabled
    assert handle.tracer_provider is None

    @obskit.preprocess
    def double(x: int) -> int:
        return 2 * x

    assert double(2) == 4
    assert not trace.get_tracer("t").start_span("x").is_recording()
    assert obskit.force_flush(1)
    assert obskit.shutdown(1)
    assert receiver.request_count() == 0


def test_sdk_disabled_still_validates_nothing_else(monkeypatch: pytest.MonkeyPatch):
    """Bad configuration fails fast at init() even before anything is installed."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL='carrier-pigeon'"):
        obskit.init()


def test_service_name_precedence(monkeypatch: pytest.MonkeyPatch, receiver: OtlpReceiver):
    """service.name: argument > OTEL_SERVICE_NAME > OTEL_RESOURCE_ATTRIBUTES > unknown_service."""
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes")
    handle = obskit.init(endpoint=receiver.grpc_endpoint, system_metrics=False)
    assert handle.resource is not None
    assert handle.resource.attributes["service.name"] == "from-attributes"
    from obskit import testing

    testing._reset()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    handle = obskit.init(endpoint=receiver.grpc_endpoint, system_metrics=False)
    assert handle.resource is not None
    assert handle.resource.attributes["service.name"] == "from-env"


def test_secrets_never_reach_logs_warnings_or_repr(receiver: OtlpReceiver, caplog: pytest.LogCaptureFixture):
    """Header values and URL passwords appear in no log record, warning or repr."""
    caplog.set_level(logging.DEBUG)
    handle = _init(receiver, headers={"authorization": "Bearer TOPSECRET"})
    with pytest.warns(ObskitWarning) as warned:
        _init(receiver, headers={"authorization": "Bearer TOPSECRET2"})
    assert "TOPSECRET" not in str(warned[0].message)
    text = repr(handle) + repr(handle.settings) + caplog.text
    assert "TOPSECRET" not in text
    assert "'authorization': '***'" in repr(handle.settings)


def test_sampler_always_off_exports_no_span(receiver: OtlpReceiver):
    """OTEL_TRACES_SAMPLER=always_off records no span but still records metrics."""
    handle = _init(receiver, sampler="always_off")

    @obskit.inference(model="m")
    def f() -> int:
        return 1

    with trace.get_tracer("t").start_as_current_span("root"):
        f()
    handle.force_flush(5)
    receiver.wait_for_metric("obskit.model.duration", timeout=5)
    assert receiver.spans() == []


def test_ratio_sampler_argument(receiver: OtlpReceiver):
    """traceidratio with 0.5 keeps roughly half of the root spans."""
    handle = _init(receiver, sampler="traceidratio", sampler_arg=0.5)
    tracer = trace.get_tracer("t")
    for _ in range(400):
        tracer.start_span("r").end()
    handle.force_flush(5)
    kept = len(receiver.spans("r"))
    assert 120 < kept < 280


def test_console_exporter_prints_spans(capsys: pytest.CaptureFixture[str]):
    """traces_exporter='console' writes spans as JSON to stdout; no network."""
    handle = obskit.init(traces_exporter="console", metrics_exporter="none", logs_exporter="none", system_metrics=False)
    with trace.get_tracer("t").start_as_current_span("printed"):
        pass
    handle.force_flush(5)
    out = capsys.readouterr().out
    start = out.index('{\n    "name": "printed"')
    assert json.JSONDecoder().raw_decode(out[start:])[0]["kind"] == "SpanKind.INTERNAL"


def test_none_exporters_export_nothing(receiver: OtlpReceiver):
    """All exporters 'none': nothing is sent, decorators still run."""
    handle = _init(receiver, traces_exporter="none", metrics_exporter="none", logs_exporter="none")

    @obskit.stage("tokenize")
    def tok(s: str) -> list[str]:
        return s.split()

    assert tok("a b") == ["a", "b"]
    handle.force_flush(2)
    assert receiver.request_count() == 0


def test_records_carry_trace_ids_for_formatters(receiver: OtlpReceiver):
    """LogRecords get trace_id/span_id inside a span and zeros outside."""
    _init(receiver, logs_exporter="none")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("formatter-test")
    logger.addHandler(keep := Keep())
    try:
        with trace.get_tracer("t").start_as_current_span("s") as span:
            logger.warning("inside")
        logger.warning("outside")
    finally:
        logger.removeHandler(keep)
    inside, outside = records
    context = span.get_span_context()
    assert inside.trace_id == format(context.trace_id, "032x")  # type: ignore[attr-defined]
    assert inside.span_id == format(context.span_id, "016x")  # type: ignore[attr-defined]
    assert outside.trace_id == "0" * 32  # type: ignore[attr-defined]
    formatted = logging.Formatter("%(trace_id)s %(message)s").format(inside)
    assert formatted == f"{inside.trace_id} inside"  # type: ignore[attr-defined]


def test_basic_config_after_init_still_configures_the_app(receiver: OtlpReceiver):
    """logging.basicConfig() after init() still installs the app's handler; obskit's stays."""
    root = logging.getLogger()
    pytest_handlers = list(root.handlers)  # pytest's log capture would make basicConfig() a no-op by itself
    for handler in pytest_handlers:
        root.removeHandler(handler)
    before: list[logging.Handler] = []
    _init(receiver)
    ours = [h for h in root.handlers if h not in before]
    assert len(ours) == 1
    try:
        logging.basicConfig(level=logging.INFO)
        added = [h for h in root.handlers if h not in before and h not in ours]
        assert len(added) == 1
        assert isinstance(added[0], logging.StreamHandler)
        assert ours[0] in root.handlers
    finally:
        for handler in root.handlers[:]:
            if handler not in ours:
                root.removeHandler(handler)
        for handler in pytest_handlers:
            root.addHandler(handler)


def test_shutdown_respects_deadline_with_unreachable_collector():
    """With nothing listening, shutdown() returns within its deadline instead of retrying for a minute."""
    handle = obskit.init(endpoint="http://127.0.0.1:9", system_metrics=False, timeout=30)
    for _ in range(10):
        trace.get_tracer("t").start_span("lost").end()
    started = time.monotonic()
    handle.shutdown(timeout=1.0)
    assert time.monotonic() - started < 3.0


def test_exit_flushes_spans(receiver: OtlpReceiver, tmp_path):
    """Spans of a process that simply exits are exported by the at-exit shutdown."""
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import obskit
            obskit.init(service_name="exiting", endpoint={receiver.grpc_endpoint!r}, system_metrics=False)

            @obskit.inference(model="last")
            def f():
                return 1

            f()
            """
        )
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env={"PATH": ""})
    assert result.returncode == 0, result.stderr
    span = receiver.wait_for_span("inference last", timeout=5)
    assert span.resource["service.name"] == "exiting"


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("/health", True),
        ("/healthz", True),
        ("/readyz", True),
        ("/livez", True),
        ("/metrics", True),
        ("/health?probe=k8s", True),
        ("/v2/health/live", True),  # the Open Inference Protocol (KServe v2, Triton, MLServer)
        ("/v2/health/ready/", True),
        ("/v2/models/iris/ready", True),
        ("/v2/models/iris/versions/3/ready", True),
        ("/v2/models/iris/infer", False),
        ("/v2/models/iris", False),
        ("/v2/health/stats", False),
        ("/health-report", False),
        ("/api/health", False),
        ("/predict", False),
    ],
)
def test_default_excluded_urls_are_anchored(path: str, excluded: bool):
    """The default exclusions match whole health/readiness/liveness/metrics paths, nothing else."""
    import re

    from obskit._semconv import DEFAULT_EXCLUDED_URLS

    regex = re.compile("|".join(contrib_excluded_urls((DEFAULT_EXCLUDED_URLS,)).split(",")))
    assert bool(regex.search("http://127.0.0.1:8000" + path)) is excluded


@pytest.mark.parametrize(
    ("pattern", "path", "excluded"),
    [
        ("^/internal/", "/internal/debug", True),
        ("^/internal/", "/api/internal/x", False),
        ("debug", "/api/debug/vars", True),
        ("^/ok$", "/ok", True),
        ("^/ok$", "/ok/more", False),
        ("^/ok$", "/ok?x=1", True),
    ],
)
def test_excluded_url_patterns_match_the_path(pattern: str, path: str, excluded: bool):
    """User patterns are matched against the path: ^ anchors at its start, $ at its end."""
    import re

    regex = re.compile(contrib_excluded_urls((pattern,)))
    assert bool(regex.search("https://models.example:443" + path)) is excluded
    assert not regex.search("https://debug.example/x") or pattern != "debug" or path != "/x"


def test_excluded_paths_as_the_middlewares_search_them():
    """obskit's own middlewares search all patterns in the path at once; a set that cannot be one alternation
    (inline global flags) is searched pattern by pattern."""
    assert excluded_paths(()) is None
    search = excluded_paths(("^/healthz$", "^/internal/"))
    assert search is not None
    assert [bool(search(p)) for p in ("/healthz", "/healthz/x", "/internal/a", "/api/internal/a")] == [
        True,
        False,
        True,
        False,
    ]
    flagged = excluded_paths(("(?i)^/HEALTH$", "^/ready$"))
    assert flagged is not None
    assert [bool(flagged(p)) for p in ("/health", "/ready", "/predict")] == [True, True, False]


def test_excluded_paths_remembers_a_bounded_number_of_paths(monkeypatch: pytest.MonkeyPatch):
    """The per-path answers the middlewares look up first: right for every path, remembered for the first N only."""
    from obskit._integrations import _http

    monkeypatch.setattr(_http, "_MAX_EXCLUDED_PATHS", 3)
    excluded = ExcludedPaths(("^/healthz$",))
    assert excluded.active
    paths = ["/healthz", "/predict", "/items/1", "/items/2", "/healthz", "/items/3"]
    assert [excluded.cache[p] for p in paths] == [True, False, False, False, True, False]
    assert excluded.cache == {"/healthz": True, "/predict": False, "/items/1": False}
    nothing = ExcludedPaths(())
    assert not nothing.active
    assert nothing.cache["/healthz"] is False


def test_init_after_shutdown_warns_and_stays_off(receiver: OtlpReceiver):
    """init() after shutdown() says telemetry stays off rather than silently returning a dead handle."""
    handle = _init(receiver)
    assert obskit.shutdown(2)
    with pytest.warns(ObskitWarning, match="telemetry stays off until the process restarts"):
        again = _init(receiver)
    assert again is handle


def test_an_apps_own_trace_id_in_extra_is_kept_not_refused():
    """logging.Logger.makeRecord refuses extra keys a record factory set (KeyError in the app's logging call):
    with obskit's factory installed, extra={"trace_id": ...} still logs, and the app's value wins."""
    import logging

    from obskit.testing import capture_telemetry

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("test.extra")
    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with capture_telemetry() as telemetry:

            @obskit.inference(model="m")
            def predict() -> None:
                logger.info("own ids", extra={"trace_id": "from-app", "trace_sampled": "yes", "user": "u1"})
                logger.info("ours")

            predict()
            [span] = telemetry.spans(name="inference m")
        own, ours = records
        assert (own.trace_id, own.trace_sampled, own.user) == ("from-app", "yes", "u1")  # type: ignore[attr-defined]
        assert own.span_id == ours.span_id == f"{span.context.span_id:016x}"  # type: ignore[attr-defined]
        assert ours.trace_id == f"{span.context.trace_id:032x}"  # type: ignore[attr-defined]
    finally:
        logger.removeHandler(handler)
    from obskit._logging import _ORIGINAL_MAKE_RECORD

    assert logging.Logger.makeRecord is _ORIGINAL_MAKE_RECORD  # the stdlib's again once obskit shut down
