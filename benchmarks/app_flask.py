"""The benchmark's Flask model server; the VARIANT env switch picks the instrumentation (see _benchapp.py).

Run: VARIANT=obskit_full gunicorn -w 1 -k sync --chdir benchmarks app_flask:app
"""

from __future__ import annotations

import os

import _benchapp as bench
from flask import Flask, Response, jsonify, request

bench.setup()
preprocess, inference, postprocess = bench.stages()
featurize = preprocess(bench.featurize)
infer = inference(bench.infer)
to_labels = postprocess(bench.to_labels)

app = Flask(__name__)


def _filler(item_id: int) -> Response:
    return jsonify(item=item_id)


# Filler routes first: see _benchapp.FILLER_ROUTES.
for i in range(bench.FILLER_ROUTES):
    app.add_url_rule(f"/filler{i}/items/<int:item_id>", f"filler{i}", _filler, methods=["GET"])


@app.post("/predict")
def predict() -> Response:
    body = request.get_json(force=True)
    return jsonify(predictions=to_labels(infer(featurize(body["instances"]))))


@app.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok", pid=os.getpid())  # bench_http.wait_ready: the answer is ours


bench.instrument_flask(app)
