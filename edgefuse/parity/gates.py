"""Gates: the accuracy an artifact must keep, from `gates:` in edge_config.yaml.

A gate passes only when every limit it sets holds; with `confidence` it is judged on the
one-sided bootstrap bound (drop's upper bound, value's lower bound), so "max_drop: 0.5,
confidence: 0.95" means "drop <= 0.5 pt at 95 %". There is no "passed with a warning": a
gate passes, fails, or is skipped because the model has no such task (shown as skipped).
Gates that cannot be judged at all (unknown metric, a limit the metric cannot have) are
errors, found before any model runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgefuse.config import GateConfig
from edgefuse.errors import ValidationError
from edgefuse.parity.catalog import MetricDef, format_drop, format_value, lookup
from edgefuse.parity.metrics import finite_or_none, one_sided_bound
from edgefuse.parity.scoring import MetricResult

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass
class GateCheck:
    """One limit of a gate: what was compared with what."""

    limit_kind: str  # max_drop | max_relative_drop | min_value
    limit: float
    observed: float
    basis: str  # "point estimate" or "upper 95% bound" / "lower 95% bound"
    passed: bool

    def describe(self, d: MetricDef) -> str:
        op = ">=" if self.limit_kind == "min_value" else "<="
        if self.limit_kind == "max_drop":
            obs, lim = format_drop(d, self.observed), format_drop(d, self.limit).lstrip("+")
            label = "drop"
        elif self.limit_kind == "max_relative_drop":
            obs, lim, label = f"{self.observed * 100:+.2f}%", f"{self.limit * 100:.2f}%", "relative drop"
        else:
            obs, lim, label = format_value(d, self.observed), format_value(d, self.limit), "value"
        return f"{label} {obs} ({self.basis}) {op} {lim}: {'ok' if self.passed else 'FAIL'}"

    def to_dict(self) -> dict[str, Any]:
        return {"limit_kind": self.limit_kind, "limit": self.limit, "observed": finite_or_none(self.observed),
                "basis": self.basis, "passed": self.passed}


@dataclass
class GateResult:
    gate: GateConfig
    artifact: str
    status: str
    message: str
    checks: list[GateCheck] = field(default_factory=list)

    @property
    def metric(self) -> str:
        return self.gate.metric

    @property
    def title(self) -> str:
        """A stable, readable name for the gate (JUnit test case name)."""
        g = self.gate
        parts = [f"max_drop={g.max_drop:g}" if g.max_drop is not None else "",
                 f"max_relative_drop={g.max_relative_drop:g}" if g.max_relative_drop is not None else "",
                 f"min_value={g.min_value:g}" if g.min_value is not None else "",
                 f"confidence={g.confidence:g}" if g.confidence is not None else ""]
        return f"{g.metric} [{', '.join(p for p in parts if p)}]"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "title": self.title, "artifact": self.artifact, "status": self.status,
                "message": self.message, "checks": [c.to_dict() for c in self.checks],
                "gate": {k: v for k, v in vars(self.gate).items() if v is not None}}


def check_gates(gates: Sequence[GateConfig]) -> list[MetricDef]:
    """Refuse gates that cannot be judged, before anything runs; returns their metric definitions."""
    defs = []
    for g in gates:
        d = lookup(g.metric)
        if g.max_drop is None and g.max_relative_drop is None and g.min_value is None:
            raise ValidationError(f"gate on '{g.metric}' sets no limit", "set max_drop, max_relative_drop or min_value", code="EF903")
        if g.confidence is not None and not (0.5 <= g.confidence < 1.0):
            raise ValidationError(f"gate on '{g.metric}': confidence {g.confidence} is outside [0.5, 1)",
                                  "use e.g. 0.95 for a 95 % one-sided bound", code="EF903")
        if g.min_value is not None and not d.higher_is_better:
            raise ValidationError(f"gate on '{g.metric}': min_value makes no sense for an error metric (lower is better)",
                                  "use max_drop: the drop of an error metric is the error itself", code="EF904")
        if d.ideal is not None and not math.isfinite(d.ideal) and (g.max_drop is not None or g.max_relative_drop is not None):
            raise ValidationError(f"gate on '{g.metric}': the reference's own {g.metric} is infinite, so it has no drop",
                                  "use min_value (e.g. min_value: 30 for 30 dB)", code="EF904")
        if g.max_relative_drop is not None and d.kind != "task" and d.ideal == 0:
            raise ValidationError(f"gate on '{g.metric}': a relative drop from an ideal of 0 is undefined",
                                  "use max_drop", code="EF904")
        defs.append(d)
    return defs


def _bound(samples: np.ndarray | None, point: float, confidence: float | None, upper: bool) -> tuple[float, str]:
    if confidence is None or samples is None:
        return point, "point estimate"
    return one_sided_bound(samples, confidence, upper), f"{'upper' if upper else 'lower'} {confidence * 100:g}% bound"


def evaluate_gate(gate: GateConfig, artifact: str, metrics: dict[str, MetricResult], model_tasks: Iterable[str],
                  outputs: Iterable[str]) -> GateResult:
    """Judge one gate on one artifact's metrics."""
    d = lookup(gate.metric)
    r = metrics.get(gate.metric)
    if r is None:
        if d.kind == "tensor":
            out_name = gate.metric.split(".", 1)[1].rsplit(".", 1)[0]
            raise ValidationError(f"gate '{gate.metric}' names output '{out_name}', which this model does not produce",
                                  f"outputs found: {', '.join(sorted(outputs)) or 'none'}", code="EF905")
        tasks = sorted(model_tasks)
        why = (f"the model has no {d.task} task (tasks: {', '.join(tasks)})" if d.task not in tasks
               else f"the evaluation set has no items for {gate.metric}")
        return GateResult(gate, artifact, SKIPPED, f"skipped: {why}")
    checks: list[GateCheck] = []
    if gate.max_drop is not None:
        obs, basis = _bound(r.drop_samples, r.drop if r.drop is not None else math.nan, gate.confidence, upper=True)
        checks.append(GateCheck("max_drop", gate.max_drop, obs, basis, bool(obs <= gate.max_drop)))
    if gate.max_relative_drop is not None:
        ref = r.reference if r.reference is not None else math.nan
        if not (math.isfinite(ref) and ref != 0):
            raise ValidationError(f"gate on '{gate.metric}': relative drop is undefined, the reference scores {ref}",
                                  "use max_drop or min_value for this metric", code="EF906")
        rel_samples = None
        if r.drop_samples is not None and r.reference_samples is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                rel_samples = r.drop_samples / np.abs(r.reference_samples)
        obs, basis = _bound(rel_samples, (r.drop if r.drop is not None else math.nan) / abs(ref), gate.confidence, upper=True)
        checks.append(GateCheck("max_relative_drop", gate.max_relative_drop, obs, basis, bool(obs <= gate.max_relative_drop)))
    if gate.min_value is not None:
        obs, basis = _bound(r.value_samples, r.value, gate.confidence, upper=False)
        checks.append(GateCheck("min_value", gate.min_value, obs, basis, bool(obs >= gate.min_value)))
    ok = all(c.passed for c in checks)  # NaN compares False: an undefined figure never passes
    msg = "; ".join(c.describe(d) for c in checks)
    return GateResult(gate, artifact, PASSED if ok else FAILED, msg, checks)


def evaluate_gates(gates: Sequence[GateConfig], artifact: str, metrics: dict[str, MetricResult],
                   model_tasks: Iterable[str], outputs: Iterable[str]) -> list[GateResult]:
    tasks, outs = list(model_tasks), list(outputs)
    return [evaluate_gate(g, artifact, metrics, tasks, outs) for g in gates]
