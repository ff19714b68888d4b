"""Score an artifact's outputs against the FP32 reference's outputs and the labels.

Pure numpy: takes what both models produced on the evaluation set (`TaskOutputs`) and the
labels (`EvalLabels`), returns one `MetricResult` per metric with the paired bootstrap
interval on its drop. Kept apart from running models so it can be tested on synthetic arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgefuse.parity import metrics as M
from edgefuse.parity.catalog import TASK_METRICS, MetricDef, per_kind_def, tensor_def

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
# a separate, fixed seed offset per task so every task has its own resampling stream
_TASK_SEED = {"vqa": 0, "itm": 1, "retrieval": 2, "grounding": 3, "captioning": 4}


@dataclass
class EvalLabels:
    """Ground truth of the evaluation set, flattened per task (None = the set has no such items)."""

    vqa_answer: np.ndarray | None = None  # [Nq] answer index; -1 = answer outside the vocabulary
    vqa_kind: list[str] | None = None  # [Nq] question kind (per-kind accuracy when there are several)
    itm_label: np.ndarray | None = None  # [Np] 1 = match
    boxes: np.ndarray | None = None  # [Nr, 4] x, y, w, h in [0, 1]
    caption_refs: list[list[str]] | None = None  # [Ni] labelled captions per image


@dataclass
class TaskOutputs:
    """What one model produced on the evaluation set.

    `tensors` holds each model output over the items of its task (vqa_logits over the
    questions, itm_logits over the caption pairs, box and grounding_attention over the
    referring phrases); `retrieval` the match score of image i with caption j [n, n];
    `captions` the generated captions.
    """

    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    retrieval: np.ndarray | None = None
    captions: list[str] | None = None


@dataclass
class MetricResult:
    """One metric of one artifact: value, the reference's value, drop and bootstrap intervals."""

    definition: MetricDef
    reference: float | None
    value: float
    drop: float | None
    drop_ci: tuple[float, float] | None
    value_ci: tuple[float, float] | None
    n: int
    drop_samples: np.ndarray | None = field(default=None, repr=False)
    value_samples: np.ndarray | None = field(default=None, repr=False)
    reference_samples: np.ndarray | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def relative_drop(self) -> float | None:
        if self.drop is None or self.reference is None or not np.isfinite(self.reference) or self.reference == 0:
            return None
        return self.drop / abs(self.reference)

    def to_dict(self) -> dict[str, Any]:
        d = self.definition
        ci = (lambda c: None if c is None else [M.finite_or_none(c[0]), M.finite_or_none(c[1])])
        return {
            "task": d.task, "kind": d.kind, "unit": d.unit, "higher_is_better": d.higher_is_better,
            "reference": None if self.reference is None else M.finite_or_none(self.reference),
            "value": M.finite_or_none(self.value),
            "drop": None if self.drop is None else M.finite_or_none(self.drop),
            "relative_drop": None if self.relative_drop is None else M.finite_or_none(self.relative_drop),
            "drop_ci": ci(self.drop_ci), "value_ci": ci(self.value_ci), "n": self.n,
        }


def _result(d: MetricDef, ref: M.Statistic | None, art: M.Statistic, idx: np.ndarray, confidence: float) -> MetricResult:
    p = M.paired_bootstrap(ref, art, idx)
    if ref is None:  # compared with the reference directly: its value is the ideal one
        ideal = float(d.ideal if d.ideal is not None else np.nan)
        reference, ref_samples = ideal, np.full(len(idx), ideal)
    else:
        reference, ref_samples = p.reference, p.reference_samples
    if np.isfinite(reference):
        drop: float | None = float(M.drop_of(reference, p.value, d.higher_is_better))
        drop_samples = np.asarray(M.drop_of(ref_samples, p.value_samples, d.higher_is_better), dtype=np.float64)
        drop_ci = M.percentile_interval(drop_samples, confidence)
    else:
        drop, drop_samples, drop_ci = None, None, None
    return MetricResult(d, reference, p.value, drop, drop_ci, M.percentile_interval(p.value_samples, confidence),
                        art.n, drop_samples, p.value_samples, ref_samples)


def _itm_score(logits: np.ndarray) -> np.ndarray:
    """Match score: logit margin (monotone in the softmax match probability)."""
    logits = np.asarray(logits, dtype=np.float64)
    return logits[:, 1] - logits[:, 0]


def _auc_stat(scores: np.ndarray, labels: np.ndarray) -> M.LoopStat:
    return M.LoopStat(len(scores), lambda i: M.roc_auc(scores[i], labels[i]), scale=100.0)


def _caption_exact(captions: list[str], refs: list[list[str]]) -> np.ndarray:
    return np.array([M.normalise_caption(c) in {M.normalise_caption(r) for r in rs} for c, rs in zip(captions, refs, strict=True)],
                    dtype=np.float64)


def score(labels: EvalLabels, reference: TaskOutputs, artifact: TaskOutputs, resamples: int = DEFAULT_RESAMPLES,
          seed: int = 0, confidence: float = DEFAULT_CONFIDENCE) -> dict[str, MetricResult]:
    """All metrics the outputs allow, in catalog order then tensor metrics per output."""
    out: dict[str, MetricResult] = {}
    T = TASK_METRICS
    rt, at = reference.tensors, artifact.tensors

    def idx(task: str, n: int) -> np.ndarray:
        return M.bootstrap_indices(n, resamples, seed * 1000 + _TASK_SEED[task])

    def add(name: str, ref: M.Statistic | None, art: M.Statistic, i: np.ndarray) -> None:
        out[name] = _result(T[name], ref, art, i, confidence)

    if labels.vqa_answer is not None and "vqa_logits" in rt and "vqa_logits" in at:
        ans = np.asarray(labels.vqa_answer)
        rp, ap = rt["vqa_logits"].argmax(1), at["vqa_logits"].argmax(1)
        i = idx("vqa", len(ans))
        add("vqa_accuracy", M.MeanStat(rp == ans, 100.0), M.MeanStat(ap == ans, 100.0), i)
        add("vqa_agreement", None, M.MeanStat(rp == ap), i)
        kinds = np.asarray(labels.vqa_kind) if labels.vqa_kind is not None else None
        if kinds is not None and len(set(kinds.tolist())) > 1:
            for k in sorted(set(kinds.tolist())):
                mask = kinds == k
                d = per_kind_def(k)
                out[d.name] = _result(d, M.SubsetMeanStat(rp == ans, mask, 100.0), M.SubsetMeanStat(ap == ans, mask, 100.0), i,
                                      confidence)

    if labels.itm_label is not None and "itm_logits" in rt and "itm_logits" in at:
        lab = np.asarray(labels.itm_label).astype(bool)
        rs, as_ = _itm_score(rt["itm_logits"]), _itm_score(at["itm_logits"])
        i = idx("itm", len(lab))
        add("itm_accuracy", M.MeanStat((rs > 0) == lab, 100.0), M.MeanStat((as_ > 0) == lab, 100.0), i)
        add("itm_auc", _auc_stat(rs, lab), _auc_stat(as_, lab), i)
        add("itm_agreement", None, M.MeanStat((rs > 0) == (as_ > 0)), i)

    if reference.retrieval is not None and artifact.retrieval is not None:
        rsim, asim = np.asarray(reference.retrieval), np.asarray(artifact.retrieval)
        i = idx("retrieval", len(rsim))
        for direction, (r, a) in {"i2t": (rsim, asim), "t2i": (rsim.T, asim.T)}.items():
            for k in (1, 5):
                add(f"retrieval_{direction}_r{k}", M.MeanStat(M.retrieval_hits(r, k), 100.0),
                    M.MeanStat(M.retrieval_hits(a, k), 100.0), i)

    if labels.boxes is not None and "box" in rt and "box" in at:
        gt = np.asarray(labels.boxes)
        riou, aiou = M.box_iou(rt["box"], gt), M.box_iou(at["box"], gt)
        i = idx("grounding", len(gt))
        add("grounding_miou", M.MeanStat(riou, 100.0), M.MeanStat(aiou, 100.0), i)
        add("grounding_iou50", M.MeanStat(riou >= 0.5, 100.0), M.MeanStat(aiou >= 0.5, 100.0), i)
        add("grounding_ref_iou", None, M.MeanStat(M.box_iou(at["box"], rt["box"])), i)
        if "grounding_attention" in rt and "grounding_attention" in at:
            ra, aa = rt["grounding_attention"], at["grounding_attention"]
            add("grounding_attention_cosine", None, M.MeanStat(M.rowwise_cosine(ra, aa)), i)
            add("grounding_attention_top1", None, M.MeanStat(ra.reshape(len(ra), -1).argmax(1) == aa.reshape(len(aa), -1).argmax(1)), i)

    if labels.caption_refs is not None and reference.captions is not None and artifact.captions is not None:
        refs = labels.caption_refs
        i = idx("captioning", len(refs))
        rstats = np.stack([M.bleu_item_stats(c, r) for c, r in zip(reference.captions, refs, strict=True)])
        astats = np.stack([M.bleu_item_stats(c, r) for c, r in zip(artifact.captions, refs, strict=True)])
        add("caption_bleu4", M.SummedStat(rstats, M.bleu4_from_stats, 100.0), M.SummedStat(astats, M.bleu4_from_stats, 100.0), i)
        add("caption_exact_match", M.MeanStat(_caption_exact(reference.captions, refs), 100.0),
            M.MeanStat(_caption_exact(artifact.captions, refs), 100.0), i)
        same = [M.normalise_caption(a) == M.normalise_caption(b) for a, b in zip(reference.captions, artifact.captions, strict=True)]
        add("caption_agreement", None, M.MeanStat(np.array(same, dtype=np.float64)), i)

    for name in sorted(set(rt) & set(at)):
        rows = M.tensor_item_stats(rt[name], at[name])
        i = M.bootstrap_indices(len(rows), resamples, seed * 1000 + 100 + sum(map(ord, name)))
        for stat in M.TENSOR_STATS:
            d = tensor_def(name, stat)
            out[d.name] = _result(d, None, M.TensorStat(rows, stat), i, confidence)
    return out


def reference_scores(labels: EvalLabels, reference: TaskOutputs) -> dict[str, float]:
    """The reference's own task metrics (scored against itself: drop 0), for the report header."""
    res = score(labels, reference, reference, resamples=2)
    return {k: v.value for k, v in res.items() if v.definition.kind == "task"}
