"""Per-group sensitivity: the error each quantizer group adds on its own.

For every group, the model with only that group lowered is run on calibration data and its
outputs compared with FP32 as SQNR (dB, higher is better; the worst output counts). Groups
kept in higher precision by default are measured too, so the report shows where measurement
would allow lowering them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx

from edgefuse.quantize.evaluate import make_session, output_sqnr, run_model
from edgefuse.quantize.registry import Plan

log = logging.getLogger(__name__)


def group_sensitivity(plan: Plan, model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]], threads: int = 1,
                      groups: Sequence[str] | None = None, progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Rows {group, nodes, default, sqnr_db, per_output}, worst (lowest SQNR) first."""
    reference = run_model(make_session(model, "simulated", threads), feeds)
    names = list(groups) if groups is not None else list(plan.groups)
    rows = []
    for i, g in enumerate(names):
        out = run_model(make_session(plan.build([g]), plan.eval_mode, threads), feeds)
        per = output_sqnr(reference, out)
        worst = min(per.values()) if per else math.inf
        rows.append({"group": g, "nodes": plan.groups[g], "default": g in plan.default, "sqnr_db": _r(worst),
                     "per_output": {k: _r(v) for k, v in per.items()}})
        if progress:
            progress(i + 1, len(names))
    rows.sort(key=lambda r: (r["sqnr_db"], r["group"]))
    return rows


def model_sqnr(model: onnx.ModelProto, candidate: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]], mode: str,
               threads: int = 1) -> dict[str, float]:
    ref = run_model(make_session(model, "simulated", threads), feeds)
    return {k: _r(v) for k, v in output_sqnr(ref, run_model(make_session(candidate, mode, threads), feeds)).items()}


def _r(x: float) -> float:
    return round(x, 3) if math.isfinite(x) else x


def format_table(rows: Sequence[dict[str, Any]], limit: int | None = None) -> list[str]:
    """Plain-text table lines (for logs and the Markdown report)."""
    lines = [f"{'group':<40} {'default':>7} {'SQNR dB':>9}"]
    for r in rows[:limit]:
        lines.append(f"{r['group'][:40]:<40} {'int' if r['default'] else 'kept':>7} {r['sqnr_db']:>9}")
    return lines
