"""Parity metrics in pure numpy: task metrics, tensor metrics, paired bootstrap intervals.

Every metric is computed from per-item statistics so that one paired bootstrap (the same
resampled items for the reference and the artifact) gives an interval on the drop for all
of them: accuracies and IoU rates are means, BLEU-4 and the tensor metrics are functions of
summed per-item counts, AUC is recomputed per resample.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# ---------------------------------------------------------------------------------- boxes


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of paired boxes in (x, y, w, h) form, shape [N, 4] each -> [N]; empty boxes give 0."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    aw, ah = np.clip(a[:, 2], 0, None), np.clip(a[:, 3], 0, None)
    bw, bh = np.clip(b[:, 2], 0, None), np.clip(b[:, 3], 0, None)
    ix = np.clip(np.minimum(a[:, 0] + aw, b[:, 0] + bw) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, 1] + ah, b[:, 1] + bh) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


# ------------------------------------------------------------------------------------ AUC


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN with one class."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    # average ranks (1-based) over runs of equal scores
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [scores.size]])
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


# ----------------------------------------------------------------------------------- BLEU

_TOKEN = re.compile(r"[a-z0-9]+")
BLEU_STATS = 10  # matches[1..4], totals[1..4], candidate length, reference length


def caption_tokens(text: str) -> list[str]:
    """Lower-cased word tokens, punctuation dropped (the usual caption evaluation tokenisation)."""
    return _TOKEN.findall(text.lower())


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu_item_stats(candidate: str, references: Sequence[str]) -> np.ndarray:
    """Sufficient statistics of one caption for corpus BLEU-4 (clipped matches, totals, lengths)."""
    cand = caption_tokens(candidate)
    refs = [caption_tokens(r) for r in references] or [[]]
    out = np.zeros(BLEU_STATS, dtype=np.float64)
    for n in range(1, 5):
        c = _ngrams(cand, n)
        max_ref: Counter = Counter()
        for r in refs:
            for g, k in _ngrams(r, n).items():
                max_ref[g] = max(max_ref[g], k)
        out[n - 1] = sum(min(k, max_ref[g]) for g, k in c.items())
        out[4 + n - 1] = max(len(cand) - n + 1, 0)
    out[8] = len(cand)
    # closest reference length; ties go to the shorter one (Papineni et al.)
    out[9] = min((abs(len(r) - len(cand)), len(r)) for r in refs)[1]
    return out


def bleu4_from_stats(summed: np.ndarray) -> np.ndarray:
    """Corpus BLEU-4 in [0, 1] from summed statistics [..., 10] (no smoothing: a zero precision gives 0)."""
    summed = np.asarray(summed, dtype=np.float64)
    matches, totals = summed[..., 0:4], summed[..., 4:8]
    c, r = summed[..., 8], summed[..., 9]
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(totals > 0, matches / np.where(totals > 0, totals, 1), 0.0)
        logp = np.where(prec > 0, np.log(np.where(prec > 0, prec, 1.0)), -np.inf).mean(axis=-1)
        bp = np.where(c > r, 0.0, 1.0 - r / np.where(c > 0, c, 1.0))
        bleu = np.where((c > 0) & np.isfinite(logp), np.exp(np.minimum(bp, 0.0) + logp), 0.0)
    return bleu


def bleu4(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4 in [0, 1] of candidate captions against their reference lists."""
    stats = np.stack([bleu_item_stats(c, r) for c, r in zip(candidates, references, strict=True)])
    return float(bleu4_from_stats(stats.sum(axis=0)))


def normalise_caption(text: str) -> str:
    return " ".join(caption_tokens(text))


# ------------------------------------------------------------------------------ retrieval


def retrieval_hits(similarity: np.ndarray, k: int) -> np.ndarray:
    """Per-query hit at k for a square similarity [queries, gallery] whose diagonal is the match.

    Ties are counted against the query: a gallery item scoring equal to the match ranks above it.
    """
    s = np.asarray(similarity, dtype=np.float64)
    true = np.diag(s)[:, None]
    rank = (s >= true).sum(axis=1)  # 1 = the match is strictly best
    return (rank <= k).astype(np.float64)


# -------------------------------------------------------------------------------- tensors

TENSOR_STATS = ("max_abs", "mean_abs", "cosine", "sqnr_db")
# per-item columns: sum(r*o), sum(r^2), sum(o^2), sum((r-o)^2), sum|r-o|, count, max|r-o|
_T_COLS = 7


def tensor_item_stats(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Per-item sufficient statistics [N, 7] of an output (first axis = items) against the reference."""
    r = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    o = np.asarray(output, dtype=np.float64).reshape(len(output), -1)
    if r.shape != o.shape:
        raise ValueError(f"shape mismatch {r.shape} vs {o.shape}")
    d = r - o
    return np.stack(
        [(r * o).sum(1), (r * r).sum(1), (o * o).sum(1), (d * d).sum(1), np.abs(d).sum(1),
         np.full(len(r), r.shape[1], dtype=np.float64), np.abs(d).max(1, initial=0.0)],
        axis=1,
    )


def tensor_metric_from_sums(stat: str, sums: np.ndarray, max_abs: np.ndarray) -> np.ndarray:
    """One tensor metric from per-item statistics summed over items [..., 7] and the max |error| [...]."""
    s = sums
    with np.errstate(divide="ignore", invalid="ignore"):
        if stat == "max_abs":
            return np.asarray(max_abs, dtype=np.float64)
        if stat == "mean_abs":
            return s[..., 4] / s[..., 5]
        if stat == "cosine":
            den = np.sqrt(s[..., 1] * s[..., 2])
            return np.where(den > 0, s[..., 0] / np.where(den > 0, den, 1.0), np.where(s[..., 3] == 0, 1.0, 0.0))
        if stat == "sqnr_db":
            return np.where(s[..., 3] > 0, 10.0 * np.log10(s[..., 1] / np.where(s[..., 3] > 0, s[..., 3], 1.0)), np.inf)
    raise ValueError(f"unknown tensor statistic {stat!r}")


def tensor_metrics(reference: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """max/mean abs error, cosine and SQNR (dB) of a whole output against the reference."""
    g = tensor_item_stats(reference, output)
    return {k: float(tensor_metric_from_sums(k, g.sum(axis=0), g[:, 6].max(initial=0.0))) for k in TENSOR_STATS}


def rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity per row (e.g. per attention map); two all-zero rows count as 1."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, (a * b).sum(1) / np.where(den > 0, den, 1.0), np.where(np.abs(a - b).sum(1) == 0, 1.0, 0.0))


# ------------------------------------------------------------------------ bootstrapping


class Statistic:
    """A metric over n items that can be evaluated on many resamples at once.

    `__call__(idx)` takes resampled item indices [B, n] and returns the metric per resample [B].
    """

    n: int

    def __call__(self, idx: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def point(self) -> float:
        return float(self(np.arange(self.n)[None, :])[0])


class MeanStat(Statistic):
    """Mean of per-item values times `scale` (accuracies in %, IoU rates, agreement)."""

    def __init__(self, values: np.ndarray, scale: float = 1.0) -> None:
        self.values = np.asarray(values, dtype=np.float64).ravel()
        self.n = self.values.size
        self.scale = scale

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        return self.values[idx].mean(axis=-1) * self.scale


def resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of n items occurs in each resample: [B, n] (sums become one matrix product)."""
    idx = np.atleast_2d(idx)
    b = len(idx)
    flat = (idx + (np.arange(b) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


class SubsetMeanStat(Statistic):
    """Mean of per-item values over a subset (e.g. one question kind) of the resampled items.

    The resampling runs over all items (shared with the other metrics of the task); each resample's
    subset mean counts the subset items it drew, so the interval reflects the subset's size.
    """

    def __init__(self, values: np.ndarray, mask: np.ndarray, scale: float = 1.0) -> None:
        self.values = np.asarray(values, dtype=np.float64).ravel()
        self.mask = np.asarray(mask, dtype=np.float64).ravel()
        self.n = self.values.size
        self.scale = scale

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        w = resample_counts(idx, self.n)
        den = w @ self.mask
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, (w @ (self.values * self.mask)) / np.where(den > 0, den, 1.0), np.nan) * self.scale


class SummedStat(Statistic):
    """A function of per-item statistic rows [n, k] summed over the resampled items (BLEU-4)."""

    def __init__(self, rows: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], scale: float = 1.0) -> None:
        self.rows = np.asarray(rows, dtype=np.float64)
        self.n = len(self.rows)
        self.fn = fn
        self.scale = scale

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        return self.fn(resample_counts(idx, self.n) @ self.rows) * self.scale


class TensorStat(Statistic):
    """A tensor metric (max/mean abs error, cosine, SQNR) from per-item rows of `tensor_item_stats`."""

    def __init__(self, rows: np.ndarray, stat: str) -> None:
        if stat not in TENSOR_STATS:
            raise ValueError(f"unknown tensor statistic {stat!r}")
        self.rows = np.asarray(rows, dtype=np.float64)
        self.n = len(self.rows)
        self.stat = stat

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        idx = np.atleast_2d(idx)
        if self.stat == "max_abs":
            return self.rows[:, 6][idx].max(axis=-1)
        return tensor_metric_from_sums(self.stat, resample_counts(idx, self.n) @ self.rows, np.zeros(len(idx)))


class LoopStat(Statistic):
    """A metric recomputed per resample in Python (AUC): `fn(index_vector) -> float`."""

    def __init__(self, n: int, fn: Callable[[np.ndarray], float], scale: float = 1.0) -> None:
        self.n = n
        self.fn = fn
        self.scale = scale

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        return np.array([self.fn(row) for row in np.atleast_2d(idx)], dtype=np.float64) * self.scale


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """Seeded resampling with replacement: indices [resamples, n]."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(resamples, n))


def percentile_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided percentile interval of bootstrap samples (NaNs ignored)."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return (float("nan"), float("nan"))
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(s, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def one_sided_bound(samples: np.ndarray, confidence: float, upper: bool) -> float:
    """One-sided percentile bound: the value the quantity stays below (upper) or above at `confidence`."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return float("nan")
    return float(np.quantile(s, confidence if upper else 1.0 - confidence))


@dataclass
class Paired:
    """Point values and paired bootstrap samples of one metric for the reference and an artifact."""

    reference: float
    value: float
    reference_samples: np.ndarray
    value_samples: np.ndarray


def paired_bootstrap(reference: Statistic | None, artifact: Statistic, idx: np.ndarray) -> Paired:
    """Evaluate both statistics on the same resampled items (paired), so drop intervals are tight."""
    val = artifact.point()
    samples = artifact(idx)
    if reference is None:
        return Paired(float("nan"), val, np.full(len(idx), np.nan), samples)
    return Paired(reference.point(), val, reference(idx), samples)


def drop_of(reference: float | np.ndarray, value: float | np.ndarray, higher_is_better: bool) -> float | np.ndarray:
    """Quality lost going from the reference to the artifact (positive = worse)."""
    return (reference - value) if higher_is_better else (value - reference)


def finite_or_none(x: float) -> float | None:
    """JSON-friendly float: NaN and infinities become None."""
    return float(x) if x is not None and math.isfinite(x) else None


# ----------------------------------------------------------------------- error histograms

HIST_EDGES = tuple(10.0 ** e for e in np.arange(-9.0, 2.01, 0.5))


def error_histogram(reference: np.ndarray, output: np.ndarray) -> dict[str, list[float] | list[int] | int]:
    """Histogram of |output - reference| per element over log10 bins (1e-9 .. 1e2; values outside are clipped
    into the end bins); exact zeros are counted apart."""
    d = np.abs(np.asarray(output, dtype=np.float64) - np.asarray(reference, dtype=np.float64)).ravel()
    zeros = int((d == 0).sum())
    nz = np.clip(d[d > 0], HIST_EDGES[0], HIST_EDGES[-1] * 0.999)
    counts, _ = np.histogram(nz, bins=np.asarray(HIST_EDGES))
    return {"edges": [float(e) for e in HIST_EDGES], "counts": [int(c) for c in counts], "zeros": zeros}
