"""What a receiver got, in a form two runs of the same calls can be compared by (ids and times left out)."""

from __future__ import annotations

from typing import Any

from obskit.testing import OtlpReceiver


def received(rx: OtlpReceiver, count: int, remote_trace: str = "") -> list[dict[str, Any]]:
    """The ``count`` spans received, sorted by name (then by whether they belong to ``remote_trace``)."""
    spans = rx.wait_for_spans(count, timeout=10)
    by_id = {s.span_id: s for s in spans}
    out = []
    for s in sorted(spans, key=lambda s: (s.name, s.trace_id == remote_trace)):
        parent = by_id.get(s.parent_span_id)
        out.append(
            {
                "name": s.name,
                "kind": s.kind,
                "status": (s.status_code, s.status_message),
                "attributes": list(s.attributes.items()),  # in order
                "events": [(name, sorted(attributes)) for name, attributes in s.events],
                "resource": s.resource,
                "scope": s.scope,
                "parent": parent.name if parent else s.parent_span_id,
                "same_trace": parent is None or parent.trace_id == s.trace_id,
                "remote_trace": s.trace_id == remote_trace,
                "ordered_times": 0 < s.start_time_ns <= s.end_time_ns,
            }
        )
    return out
