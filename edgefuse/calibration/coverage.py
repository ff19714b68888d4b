"""What the calibration data covers: pairs used, text lengths, per-input value ranges.

Ranges are only as good as the data behind them; this summary goes into the quantize report
so a user sees, e.g., that no text longer than 12 tokens was calibrated.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np


def coverage_summary(pairs: Sequence[Any], feeds: Sequence[dict[str, np.ndarray]], requested: int | None = None) -> dict[str, Any]:
    lengths: list[int] = []
    for f in feeds:
        if "attention_mask" in f:
            lengths += [int(v) for v in f["attention_mask"].sum(axis=1)]
    hist = Counter(lengths)
    ranges: dict[str, dict[str, float]] = {}
    for name in sorted({k for f in feeds for k in f}):
        arrs = [f[name] for f in feeds if name in f]
        lo = min(float(a.min()) for a in arrs)
        hi = max(float(a.max()) for a in arrs)
        mean = float(np.mean([a.astype(np.float64).mean() for a in arrs]))
        ranges[name] = {"min": lo, "max": hi, "mean": round(mean, 6)}
    kinds = Counter(p.kind for p in pairs)
    answers = Counter(p.answer for p in pairs if p.answer is not None)
    out: dict[str, Any] = {
        "pairs": len(pairs),
        "requested": requested if requested is not None else len(pairs),
        "images": len({p.key.split("/")[0] for p in pairs}),
        "texts_by_kind": dict(sorted(kinds.items())),
        "distinct_answers": len(answers),
        "text_length_histogram": {str(k): hist[k] for k in sorted(hist)},
        "text_length_range": [min(lengths), max(lengths)] if lengths else None,
        "input_ranges": ranges,
    }
    return out


def format_histogram(hist: dict[str, int], width: int = 30) -> list[str]:
    """Text bars for the CLI (one line per length)."""
    top = max(hist.values(), default=1)
    return [f"{k:>3} tokens {'#' * max(1, round(width * v / top))} {v}" for k, v in hist.items()]
