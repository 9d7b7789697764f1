from __future__ import annotations

from flask import Flask

import obskit
from obskit.testing import capture_telemetry


def _app() -> Flask:
    app = Flask(__name__)

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/healthz")
    def health() -> str:
        return "ok"

    return app


def test_flask_app_after_init_named_by_rule():
    """A Flask app made after init() is traced, span named by its URL rule, health checks excluded."""
    with capture_telemetry() as telemetry:
        client = _app().test_client()
        assert client.get("/items/3").status_code == 200
        assert client.get("/healthz").status_code == 200
        assert client.get("/nothing/here/42").status_code == 404
        names = sorted(s.name for s in telemetry.spans())
        assert names == ["GET", "GET /items/<int:item_id>"]
        metric = telemetry.metric("http.server.request.duration")
        assert metric.count() == 2
        routes = {a.get("http.route") for a in metric.attributes()}
        assert routes == {"/items/<int:item_id>", None}


def test_flask_instrument_twice_is_noop():
    """instrument_app() twice on a Flask app records each request once."""
    app = _app()
    with capture_telemetry(auto_instrument=False) as telemetry:
        obskit.instrument_app(app)
        obskit.instrument_app(app)
        app.test_client().get("/items/1")
        assert len(telemetry.spans(name="GET /items/<int:item_id>")) == 1


def test_custom_excluded_urls():
    """OBSKIT_EXCLUDED_URLS replaces the defaults: /healthz is then traced, /items/ is not."""
    with capture_telemetry(excluded_urls=["^/items/"]) as telemetry:
        client = _app().test_client()
        client.get("/items/1")
        client.get("/healthz")
        assert [s.name for s in telemetry.spans()] == ["GET /healthz"]
