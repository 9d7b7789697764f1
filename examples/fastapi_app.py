"""An example FastAPI model server with obskit: RED metrics, stage spans, a streaming endpoint.

Run:  OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 uvicorn examples.fastapi_app:app
Try:  curl -X POST localhost:8000/predict -H 'content-type: application/json' \
           -d '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

import obskit

try:  # run as a module (uvicorn examples.fastapi_app:app) or as a script from examples/
    from examples import _model
except ImportError:  # pragma: no cover
    import _model  # type: ignore[no-redef]

obskit.init(service_name="iris-classifier", service_version="1.0.0")
app = FastAPI(title="iris classifier")  # created after init(): instrumented automatically
# The app's own log output, with the trace ids obskit puts on every record; obskit exports the same records
# over OTLP without printing them a second time.
logging.basicConfig(
    level=logging.INFO, format="%(asctime)s %(levelname)s [trace_id=%(trace_id)s] %(name)s: %(message)s"
)
log = logging.getLogger("iris")
MODEL = "iris-centroid"
VERSION = "1"
# Fault injection for demos and tests: a share of requests fail, inference made slow.
FAIL_EVERY = int(os.environ.get("IRIS_FAIL_EVERY", "0"))
INFERENCE_DELAY = float(os.environ.get("IRIS_INFERENCE_DELAY", "0"))
_calls = 0


class PredictRequest(BaseModel):
    instances: list[list[float]]


@obskit.preprocess(model=MODEL, version=VERSION, batch_size=lambda rows: len(rows))
def featurize(rows: list[list[float]]) -> list[tuple[float, ...]]:
    return _model.featurize(rows)


@obskit.inference(model=MODEL, version=VERSION)
def predict(features: list[tuple[float, ...]]) -> list[list[float]]:
    obskit.set_batch_size(len(features))
    global _calls
    _calls += 1
    if FAIL_EVERY and _calls % FAIL_EVERY == 0:
        raise RuntimeError("model backend unavailable")
    return _model.predict(features, delay=INFERENCE_DELAY)


@obskit.postprocess(model=MODEL, version=VERSION)
def to_response(probabilities: list[list[float]]) -> list[dict[str, object]]:
    return _model.to_labels(probabilities)


@app.post("/predict")
def predict_route(request: PredictRequest) -> dict[str, object]:
    try:
        features = featurize(request.instances)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    predictions = to_response(predict(features))
    log.info("predicted %d rows", len(predictions))
    return {"predictions": predictions}


@app.get("/models/{name}")
def model_info(name: str) -> dict[str, str]:
    if name != MODEL:
        raise HTTPException(status_code=404, detail="unknown model")
    return {"name": MODEL, "version": VERSION}


@obskit.stage("generate", model=MODEL, version=VERSION)
async def generate(n: int) -> AsyncIterator[str]:
    for i in range(n):
        await asyncio.sleep(0.005)
        yield f"token-{i} "


@app.get("/stream")
async def stream(n: int = 5) -> StreamingResponse:
    return StreamingResponse(generate(n), media_type="text/plain")


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
