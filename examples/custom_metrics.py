"""Your own metrics with obskit's cardinality guard: ``python examples/custom_metrics.py``.

Metrics go to the OTLP endpoint of ``OTEL_EXPORTER_OTLP_ENDPOINT`` (default localhost:4317); run
``obskit tail`` in another terminal to watch them, or set ``OTEL_METRICS_EXPORTER=console``.
"""

from __future__ import annotations

import random

import obskit
from obskit import metrics

# Declared at import time, before init(): each declares the attribute keys it may carry.
PREDICTIONS = metrics.counter(
    "fraud.predictions", unit="{prediction}", description="Scored transactions", attributes=["model.name", "outcome"]
)
SCORE = metrics.histogram("fraud.score", buckets=[0.1, 0.25, 0.5, 0.75, 0.9], attributes=["model.name"])
QUEUE = metrics.up_down_counter("fraud.queue", unit="{transaction}", attributes=["model.name"])
# Merchants come from requests: at most 50 distinct values are kept, the rest are recorded as _OTHER.
BY_MERCHANT = metrics.counter("fraud.by_merchant", unit="{prediction}", attributes=["merchant"], max_values=50)


def score(merchant: str) -> float:
    QUEUE.add(1, {"model.name": "fraud-xgb"})
    value = random.random()
    SCORE.record(value, {"model.name": "fraud-xgb"})
    PREDICTIONS.add(1, {"model.name": "fraud-xgb", "outcome": "block" if value > 0.9 else "allow"})
    BY_MERCHANT.add(1, {"merchant": merchant, "card.number": "4111..."})  # undeclared key: dropped, counted
    QUEUE.add(-1, {"model.name": "fraud-xgb"})
    return value


def main() -> None:
    obskit.init(service_name="custom-metrics-demo")
    try:
        for i in range(10_000):  # an "attack": 10,000 distinct user-supplied merchant names
            score(f"merchant-{i}")
        for (metric, key), count in sorted(metrics.overflow_counts().items()):
            print(f"{metric} {key}: {count} measurements overflowed")
        # fraud.by_merchant card.number: 10000 measurements overflowed
        # fraud.by_merchant merchant: 9950 measurements overflowed
    finally:
        obskit.shutdown()


if __name__ == "__main__":
    main()
