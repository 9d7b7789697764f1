"""The shipped pytest plugin (``obskit_capture`` via the pytest11 entry point) and ``capture_telemetry()``.

Users' test files run in their own pytest process (``runpytest_subprocess``), found through the installed entry
point exactly as in a user's project, with warnings turned into errors.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest_plugins = ["pytester"]

USER_MODULE = """
import logging

import obskit


@obskit.preprocess(model="iris", batch_size=lambda rows: len(rows))
def featurize(rows):
    return [float(sum(row)) for row in rows]


@obskit.inference(model="iris", version="2")
def predict(features):
    if not features:
        raise ValueError("empty batch")
    logging.getLogger("iris").warning("predicting %d rows", len(features))
    return [2 * x for x in features]
"""

USER_TESTS = """
import pytest

from iris_model import featurize, predict


def test_predict_is_traced(obskit_capture):
    predict([1.0, 2.0])
    [span] = obskit_capture.spans(name="inference iris")
    assert span.attributes["model.stage"] == "inference"
    assert obskit_capture.metric("obskit.model.duration").count(stage="inference") == 1


def test_each_test_starts_empty(obskit_capture):
    predict(featurize([[1, 2], [3, 4]]))
    assert [s.name for s in obskit_capture.spans()] == ["preprocess iris", "inference iris"]
    assert obskit_capture.spans(name="preprocess iris")[0].attributes["model.batch_size"] == 2
    assert obskit_capture.metric("obskit.model.duration").count(stage="inference") == 1


def test_failure_is_recorded_and_reraised(obskit_capture):
    with pytest.raises(ValueError, match="empty batch"):
        predict([])
    [span] = obskit_capture.spans(name="inference iris")
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["error.type"] == "ValueError"
    assert obskit_capture.metric("obskit.model.duration").count({"error.type": "ValueError"}) == 1


def test_logs_carry_the_trace(obskit_capture):
    predict([1.0])
    [record] = obskit_capture.logs(body="predicting 1 rows")
    [span] = obskit_capture.spans(name="inference iris")
    assert record.log_record.trace_id == span.context.trace_id


def test_wrong_expectation_fails(obskit_capture):
    predict([1.0, 2.0])
    assert obskit_capture.metric("obskit.model.duration").count(stage="inference") == 2
"""


def _run(pytester: pytest.Pytester) -> pytest.RunResult:
    pytester.makepyfile(iris_model=USER_MODULE, test_user=USER_TESTS)
    return pytester.runpytest_subprocess("-W", "error", "-p", "no:cacheprovider", "-q")


def test_user_tests_pass_and_a_wrong_expectation_fails(pytester: pytest.Pytester):
    """A user's test file gets obskit_capture from the entry point; passing tests pass, a wrong assertion fails."""
    result = _run(pytester)
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["*test_wrong_expectation_fails*", "*assert 1 == 2*"])
    result.stdout.no_fnmatch_line("FAILED*test_predict_is_traced*")


def test_fixture_is_listed_by_pytest(pytester: pytest.Pytester):
    """``pytest --fixtures`` shows obskit_capture with its docstring, so users can discover it."""
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*obskit_capture*", "*Spans, metrics and logs recorded in memory*"])


def test_capture_telemetry_without_pytest(tmp_path):
    """capture_telemetry() works in a plain script: spans, metrics and logs, and obskit is reset afterwards."""
    script = tmp_path / "plain.py"
    script.write_text(
        textwrap.dedent(
            """
            import logging
            import obskit
            from obskit.testing import capture_telemetry

            @obskit.inference(model="iris")
            def predict(features):
                logging.getLogger("iris").warning("scored")
                return sum(features)

            with capture_telemetry(service_name="plain") as telemetry:
                predict([1.0, 2.0])
                predict([3.0])
            [first, second] = telemetry.spans(name="inference iris")
            assert first.resource.attributes["service.name"] == "plain"
            assert telemetry.metric("obskit.model.duration").count(stage="inference", name="iris") == 2
            assert "obskit.model.duration" in telemetry.metric_names()
            assert [r.log_record.body for r in telemetry.logs()] == ["scored", "scored"]
            predict([1.0])  # after the block obskit is not configured: a plain call, nothing recorded
            assert len(telemetry.spans()) == 2
            print("ok")
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr


SERVER_MODULE = """
import flask
import obskit
from fastapi import FastAPI

obskit.init(service_name="from-the-module", traces_exporter="none", metrics_exporter="none", logs_exporter="none")
api = FastAPI()  # instrumented by the module's init(), for its providers
web = flask.Flask("web")


@api.get("/items/{item}")
def item(item: int) -> dict[str, int]:
    return {"item": item}


@web.get("/items/<int:item>")
def web_item(item: int) -> dict[str, int]:
    return {"item": item}
"""

SERVER_TESTS = """
import obskit
import pytest
from fastapi.testclient import TestClient

from server import api, web


def _get(app, path):
    if app is web:
        return web.test_client().get(path).status_code
    with TestClient(app) as client:
        return client.get(path).status_code


@pytest.mark.parametrize("instrument_again", [False, True])
@pytest.mark.parametrize("app", [api, web], ids=["fastapi", "flask"])
@pytest.mark.parametrize("run", [1, 2])  # a second test gets the app moved again, to its own capture
def test_module_level_app_reports_to_the_capture(obskit_capture, app, instrument_again, run):
    if instrument_again:
        obskit.instrument_app(app)  # as docs/testing.md shows; a no-op now, the capture already has the app
    assert _get(app, "/items/7") == 200
    [span] = obskit_capture.spans(name="GET /items/{item}" if app is api else "GET /items/<int:item>")
    assert span.resource.attributes["service.name"] == "unknown_service"  # the capture's, not the module's
    assert obskit_capture.metric("http.server.request.duration").count(method="GET") == 1
"""


@pytest.mark.parametrize("middleware", ["obskit", "contrib"])
def test_apps_instrumented_by_an_earlier_init_report_to_the_capture(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, middleware: str
):
    """The README's layout: init() and the app in the app's module, imported by the tests.

    obskit_capture's init() moves the app to its in-memory providers (before, the app kept sending to the module's
    shut-down providers and the capture saw only stage spans), and each later test's capture moves it again.
    """
    pytester.makepyfile(server=SERVER_MODULE, test_server=SERVER_TESTS)
    monkeypatch.setenv("OBSKIT_HTTP_INSTRUMENTATION", middleware)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=8)
