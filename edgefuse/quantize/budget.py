"""Accuracy-budget mode (NNCF's accuracy-controlled quantization, simplified).

Start from the recipe's default lowered groups; while the task metric drops more than the
budget against FP32, take the most harmful remaining group (lowest SQNR) back to higher
precision and measure again. Reverting everything gives the FP32 graph, so it always ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import onnx

from edgefuse.errors import QuantizeError, suggest
from edgefuse.quantize.evaluate import EvalSet, TaskRun, metric_drops, run_tasks, task_metrics
from edgefuse.quantize.registry import Plan

log = logging.getLogger(__name__)


def measure(model: onnx.ModelProto, es: EvalSet, reference: TaskRun, ref_metrics: dict[str, float], mode: str,
            threads: int = 1) -> tuple[dict[str, float], dict[str, float]]:
    run = run_tasks(model, es, mode, threads)
    values = task_metrics(es, run, reference)
    return values, metric_drops(ref_metrics, values)


def apply_budget(plan: Plan, sensitivity: Sequence[dict[str, Any]], es: EvalSet, reference: TaskRun, ref_metrics: dict[str, float],
                 metric: str, max_drop: float, threads: int = 1,
                 progress: Callable[[str], None] | None = None) -> tuple[list[str], onnx.ModelProto, dict[str, Any]]:
    """Returns (lowered groups, final model, report)."""
    build = plan.final_build or plan.build
    lowered = list(plan.default)
    model = build(lowered)
    values, drops = measure(model, es, reference, ref_metrics, plan.eval_mode, threads)
    if metric not in drops:
        raise QuantizeError(f"budget metric '{metric}' is not measurable for this model", suggest(metric, sorted(drops)) if drops else
                            "this model has no task output with labelled museum data", code="EF540")
    steps = [{"reverted": [], "lowered_groups": len(lowered), "metric": values[metric], "drop": drops[metric]}]
    order = [r["group"] for r in sensitivity if r["group"] in lowered]
    order += [g for g in lowered if g not in order]
    reverted: list[str] = []
    while drops[metric] > max_drop + 1e-9 and order:
        k = 1 if plan.budget_step == "one" else max(1, len(reverted))
        batch, order = order[:k], order[k:]
        reverted += batch
        lowered = [g for g in lowered if g not in batch]
        model = build(lowered)
        values, drops = measure(model, es, reference, ref_metrics, plan.eval_mode, threads)
        steps.append({"reverted": batch, "lowered_groups": len(lowered), "metric": values[metric], "drop": drops[metric]})
        if progress:
            progress(f"reverted {', '.join(batch)}: {metric} drop {drops[metric]:.2f} pt")
    report = {
        "metric": metric,
        "max_drop": max_drop,
        "reference": ref_metrics.get(metric),
        "initial_drop": steps[0]["drop"],
        "final_drop": drops[metric],
        "met": drops[metric] <= max_drop + 1e-9,
        "reverted": reverted,
        "steps": steps,
        "eval_samples": es.sizes,
    }
    return lowered, model, report
