"""A FastAPI app under attack: hundreds of routes, user-supplied model names and attributes."""

from __future__ import annotations

from fastapi import FastAPI

import obskit
from obskit import metrics

obskit.init(service_name="cardinality-target")
app = FastAPI()
REQUESTS = metrics.counter("app.requests", unit="{request}", attributes=("customer", "model.name"))
LATENCY = metrics.histogram("app.score", attributes=("model.name",))
N_ROUTES = 300


def _make_route(i: int) -> None:
    async def handler() -> dict[str, int]:
        return {"route": i}

    app.add_api_route(f"/r{i}", handler, methods=["GET"], name=f"r{i}")


for _i in range(N_ROUTES):
    _make_route(_i)


@app.get("/score")
async def score(customer: str, model: str, request_id: str = "") -> dict[str, str]:
    # Every value here is client-controlled; request.id is on the deny list and never reaches a metric.
    REQUESTS.add(1, {"customer": customer, "model.name": model, "request.id": request_id})
    LATENCY.record(0.5, {"model.name": model, "user.id": customer})
    return {"ok": "yes"}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
