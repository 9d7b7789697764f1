"""The benchmark's Flask model server; the VARIANT env switch picks the instrumentation (see _benchapp.py).

Run: VARIANT=obskit_full gunicorn -w 1 -k sync --chdir benchmarks app_flask:app
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import _benchapp as bench
from flask import Flask, Response, jsonify, request

bench.setup()


def _filler(item_id: int) -> Response:
    return jsonify(item=item_id)


def create_app(model: Sequence[Callable[..., Any]], fillers: int) -> Flask:
    """The app: ``fillers`` filler rules first (see _benchapp.FILLER_ROUTES), then /predict over ``model``'s three
    stages (featurize, infer, to_labels) and /healthz."""
    featurize, infer, to_labels = model
    app = Flask(__name__)
    for i in range(fillers):
        app.add_url_rule(f"/filler{i}/items/<int:item_id>", f"filler{i}", _filler, methods=["GET"])

    @app.post("/predict")
    def predict() -> Response:
        body = request.get_json(force=True)
        return jsonify(predictions=to_labels(infer(featurize(body["instances"]))))

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok", pid=os.getpid())  # bench_http.wait_ready: the answer is ours

    return app


app = create_app(bench.decorated_model(), bench.FILLER_ROUTES)
bench.instrument_flask(app)
