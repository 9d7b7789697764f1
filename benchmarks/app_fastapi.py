"""The benchmark's FastAPI model server; the VARIANT env switch picks the instrumentation (see _benchapp.py).

Run: VARIANT=obskit_full uvicorn --app-dir benchmarks app_fastapi:app

The handler is ``async def``: the model is a few microseconds of CPU, so it runs on the event loop instead of
paying a thread-pool hop that would hide the instrumentation's cost behind the framework's.
"""

from __future__ import annotations

import os

import _benchapp as bench
from fastapi import FastAPI
from pydantic import BaseModel

bench.setup()
preprocess, inference, postprocess = bench.stages()
featurize = preprocess(bench.featurize)
infer = inference(bench.infer)
to_labels = postprocess(bench.to_labels)

app = FastAPI()


class PredictRequest(BaseModel):
    instances: list[list[float]]


async def _filler(item_id: int) -> dict[str, int]:
    return {"item": item_id}


# Filler routes first: see _benchapp.FILLER_ROUTES.
for i in range(bench.FILLER_ROUTES):
    app.add_api_route(f"/filler{i}/items/{{item_id}}", _filler, methods=["GET"])


@app.post("/predict")
async def predict(body: PredictRequest) -> dict[str, object]:
    return {"predictions": to_labels(infer(featurize(body.instances)))}


@app.get("/healthz")
async def healthz() -> dict[str, object]:
    return {"status": "ok", "pid": os.getpid()}  # bench_http.wait_ready: the answer is ours


bench.instrument_fastapi(app)
