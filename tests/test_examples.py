"""examples/custom_metrics.py runs and its guarded metrics arrive at a real receiver."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from obskit.testing import OtlpReceiver

ROOT = Path(__file__).resolve().parents[1]


def test_custom_metrics_example(receiver: OtlpReceiver):
    """The example's 10,000 merchants arrive as 50 values plus _OTHER, totals intact, overflow counted."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBSKIT_"))}
    env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint, "OTEL_TRACES_EXPORTER": "none"})
    result = subprocess.run(
        [sys.executable, "examples/custom_metrics.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "fraud.by_merchant merchant: 9950 measurements overflowed" in result.stdout
    assert "fraud.by_merchant card.number: 10000 measurements overflowed" in result.stdout
    points = receiver.latest_metric_points("fraud.by_merchant")
    merchants = {p.attributes["merchant"] for p in points}
    assert len(merchants) == 51
    assert "_OTHER" in merchants
    assert sum(p.value for p in points) == 10_000
    assert all(set(p.attributes) == {"merchant"} for p in points)
    assert sum(p.value for p in receiver.latest_metric_points("fraud.predictions")) == 10_000
    overflow = {
        (p.attributes["obskit.metric"], p.attributes["obskit.attribute"]): p.value
        for p in receiver.latest_metric_points("obskit.cardinality.overflow")
    }
    assert overflow[("fraud.by_merchant", "merchant")] == 9950
    assert overflow[("fraud.by_merchant", "card.number")] == 10_000
