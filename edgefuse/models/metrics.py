"""Task metrics of the FP32 PyTorch model, in plain numpy.

IoU, AUC and BLEU-4 come from edgefuse.parity.metrics, so `edgefuse eval` and
`edgefuse validate` share one definition of every number; this module adds the few
summaries evaluation needs on top.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgefuse.parity.metrics import bleu4, box_iou, normalise_caption, roc_auc

__all__ = ["accuracy", "accuracy_by_group", "bleu4", "box_iou", "caption_exact_match", "roc_auc"]


def accuracy(pred: Sequence[int] | np.ndarray, target: Sequence[int] | np.ndarray) -> float:
    """Fraction of equal entries (NaN for empty input: no evidence either way)."""
    p, t = np.asarray(pred), np.asarray(target)
    if p.shape != t.shape:
        raise ValueError(f"shape mismatch {p.shape} vs {t.shape}")
    return float((p == t).mean()) if p.size else float("nan")


def accuracy_by_group(pred: Sequence[int], target: Sequence[int], groups: Sequence[str]) -> dict[str, float]:
    """Accuracy per group label (e.g. per VQA question kind), groups sorted by name."""
    p, t, g = np.asarray(pred), np.asarray(target), np.asarray(groups)
    return {str(k): accuracy(p[g == k], t[g == k]) for k in sorted(set(g.tolist()))}


def caption_exact_match(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Fraction of captions equal (after caption normalisation) to one of their references."""
    if not hypotheses:
        return float("nan")
    hits = sum(normalise_caption(h) in {normalise_caption(r) for r in refs} for h, refs in zip(hypotheses, references, strict=True))
    return hits / len(hypotheses)
