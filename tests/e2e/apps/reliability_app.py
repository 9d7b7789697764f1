"""A small FastAPI model server for the reliability scenarios: /predict traced, /stats serving obskit's books."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from pydantic import BaseModel

import obskit

handle = obskit.init(service_name="reliability-target", service_version="1")
app = FastAPI()
log = logging.getLogger("reliability")


class Body(BaseModel):
    instances: list[list[float]]


@obskit.inference(model="iris", version="1")
def predict(rows: list[list[float]]) -> list[float]:
    return [sum(row) for row in rows]


@app.post("/predict")
def predict_route(body: Body) -> dict[str, list[float]]:
    scores = predict(body.instances)
    log.warning("scored %d rows", len(scores))
    return {"scores": scores}


@app.get("/stats")
def stats() -> dict[str, dict[str, object]]:
    # Excluded from tracing by the tests (OBSKIT_EXCLUDED_URLS), so reading the books does not change them.
    return {
        signal: {
            "produced": s.produced,
            "exported": s.exported,
            "dropped": dict(s.dropped),
            "buffered": s.buffered,
            "buffered_bytes": s.buffered_bytes,
            "balanced": s.balanced,
        }
        for signal, s in handle.telemetry_stats().items()
    }


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
