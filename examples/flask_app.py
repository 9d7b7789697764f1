"""An example Flask model server with obskit.

Run:  gunicorn --preload -w 2 examples.flask_app:app
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

from flask import Flask, Response, jsonify, request

import obskit

try:
    from examples import _model
except ImportError:  # pragma: no cover
    import _model  # type: ignore[no-redef]

obskit.init(service_name="iris-classifier-flask", service_version="1.0.0")
app = Flask(__name__)  # the Flask class was imported before init(): still instrumented
# The app's own log output, with the trace ids obskit puts on every record; obskit exports the same records
# over OTLP without printing them a second time.
logging.basicConfig(
    level=logging.INFO, format="%(asctime)s %(levelname)s [trace_id=%(trace_id)s] %(name)s: %(message)s"
)
log = logging.getLogger("iris")
MODEL = "iris-centroid"
FAIL_EVERY = int(os.environ.get("IRIS_FAIL_EVERY", "0"))
_calls = 0


@obskit.preprocess(model=MODEL, version="1", batch_size=lambda rows: len(rows))
def featurize(rows: list[list[float]]) -> list[tuple[float, ...]]:
    return _model.featurize(rows)


@obskit.inference(model=MODEL, version="1")
def predict(features: list[tuple[float, ...]]) -> list[list[float]]:
    global _calls
    _calls += 1
    if FAIL_EVERY and _calls % FAIL_EVERY == 0:
        raise RuntimeError("model backend unavailable")
    return _model.predict(features)


@obskit.postprocess(model=MODEL, version="1")
def to_response(probabilities: list[list[float]]) -> list[dict[str, object]]:
    return _model.to_labels(probabilities)


@app.post("/predict")
def predict_route() -> Response:
    body = request.get_json(force=True)
    predictions = to_response(predict(featurize(body["instances"])))
    log.info("predicted %d rows", len(predictions))
    return jsonify(predictions=predictions)


@app.get("/models/<name>")
def model_info(name: str) -> Response:
    return jsonify(name=name)


@obskit.stage("generate", model=MODEL, version="1")
def generate(n: int) -> Iterator[str]:
    for i in range(n):
        time.sleep(0.002)
        yield f"token-{i} "


@app.get("/stream")
def stream() -> Response:
    return Response(generate(int(request.args.get("n", "5"))), mimetype="text/plain")


@app.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")
