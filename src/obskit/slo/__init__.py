"""SLO files: service level objectives over obskit's own metrics, validated into typed objects.

The command line turns them into Prometheus rules (``obskit slo render``), an Argo Rollouts
AnalysisTemplate (``obskit slo argo``), a CI/deployment gate (``obskit gate``) and Grafana panels
(``obskit dashboard --slo``); see docs/slo.md.

Example:
    >>> from obskit.slo import load_slo_file
    >>> slo = load_slo_file("examples/slo.yaml")  # doctest: +SKIP
    >>> slo.objectives[0].target  # doctest: +SKIP
    99.9
"""

from __future__ import annotations

from ._model import Matcher, Objective, SLOFile, load_slo_file

__all__ = ["Matcher", "Objective", "SLOFile", "load_slo_file"]
