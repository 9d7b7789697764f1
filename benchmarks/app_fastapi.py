"""The benchmark's FastAPI model server; the VARIANT env switch picks the instrumentation (see _benchapp.py).

Run: VARIANT=obskit_full uvicorn --app-dir benchmarks app_fastapi:app

The handler is ``async def``: the model is a few microseconds of CPU, so it runs on the event loop instead of
paying a thread-pool hop that would hide the instrumentation's cost behind the framework's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import _benchapp as bench
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

bench.setup()


class PredictRequest(BaseModel):
    instances: list[list[float]]


async def _filler(item_id: int) -> dict[str, int]:
    return {"item": item_id}


def filler_routes(n: int) -> list[Any]:
    """``n`` parametrised filler routes: see _benchapp.FILLER_ROUTES."""
    router = APIRouter()
    for i in range(n):
        router.add_api_route(f"/filler{i}/items/{{item_id}}", _filler, methods=["GET"])
    return list(router.routes)


def create_app(model: Sequence[Callable[..., Any]], fillers: Sequence[Any]) -> FastAPI:
    """The app: ``fillers`` first (route objects, shareable between apps), then /predict over ``model``'s three
    stages (featurize, infer, to_labels) and /healthz."""
    featurize, infer, to_labels = model
    app = FastAPI()
    app.router.routes.extend(fillers)

    @app.post("/predict")
    async def predict(body: PredictRequest) -> dict[str, object]:
        return {"predictions": to_labels(infer(featurize(body.instances)))}

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "pid": os.getpid()}  # bench_http.wait_ready: the answer is ours

    return app


app = create_app(bench.decorated_model(), filler_routes(bench.FILLER_ROUTES))
bench.instrument_fastapi(app)
