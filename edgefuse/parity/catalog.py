"""The metrics validation reports and gates can name: task, unit, direction.

Units: "pt" = percent (0..100; a drop of 1.0 is one percentage point), "fraction" = 0..1
(agreement with the reference), "dB", "abs" (absolute error in the output's unit).
Task metrics compare against the FP32 reference's own score; agreement and tensor metrics
compare the artifact with the reference directly, so their reference value is the ideal one
(the reference agrees with itself: 1.0, zero error, infinite SQNR).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgefuse.errors import ValidationError, suggest
from edgefuse.parity.metrics import TENSOR_STATS


@dataclass(frozen=True)
class MetricDef:
    name: str
    task: str  # vqa | itm | grounding | captioning | tensor
    kind: str  # task | agreement | tensor
    unit: str  # pt | fraction | dB | abs
    higher_is_better: bool
    description: str
    ideal: float | None = None  # the reference's value against itself (agreement / tensor metrics)


_DEFS = [
    MetricDef("vqa_accuracy", "vqa", "task", "pt", True, "VQA answer accuracy"),
    MetricDef("vqa_agreement", "vqa", "agreement", "fraction", True, "same answer as the reference", 1.0),
    MetricDef("itm_accuracy", "itm", "task", "pt", True, "image-text match accuracy (threshold 0.5)"),
    MetricDef("itm_auc", "itm", "task", "pt", True, "image-text match ROC AUC"),
    MetricDef("itm_agreement", "itm", "agreement", "fraction", True, "same match decision as the reference", 1.0),
    MetricDef("retrieval_i2t_r1", "itm", "task", "pt", True, "image->text retrieval recall@1"),
    MetricDef("retrieval_i2t_r5", "itm", "task", "pt", True, "image->text retrieval recall@5"),
    MetricDef("retrieval_t2i_r1", "itm", "task", "pt", True, "text->image retrieval recall@1"),
    MetricDef("retrieval_t2i_r5", "itm", "task", "pt", True, "text->image retrieval recall@5"),
    MetricDef("grounding_miou", "grounding", "task", "pt", True, "mean IoU of the box with the labelled box"),
    MetricDef("grounding_iou50", "grounding", "task", "pt", True, "share of boxes with IoU >= 0.5"),
    MetricDef("grounding_ref_iou", "grounding", "agreement", "fraction", True, "mean IoU of the box with the reference's box", 1.0),
    MetricDef("grounding_attention_cosine", "grounding", "agreement", "fraction", True,
              "cosine similarity of the attention map with the reference's", 1.0),
    MetricDef("grounding_attention_top1", "grounding", "agreement", "fraction", True,
              "same most-attended image patch as the reference", 1.0),
    MetricDef("caption_bleu4", "captioning", "task", "pt", True, "corpus BLEU-4 of generated captions"),
    MetricDef("caption_exact_match", "captioning", "task", "pt", True, "captions equal to a labelled caption"),
    MetricDef("caption_agreement", "captioning", "agreement", "fraction", True, "same caption as the reference", 1.0),
]

TASK_METRICS: dict[str, MetricDef] = {d.name: d for d in _DEFS}
_TENSOR_RE = re.compile(r"^tensor\.([A-Za-z0-9_:/.\-]+)\.([a-z_]+)$")
_TENSOR_UNITS = {"max_abs": "abs", "mean_abs": "abs", "cosine": "fraction", "sqnr_db": "dB"}
_TENSOR_IDEAL = {"max_abs": 0.0, "mean_abs": 0.0, "cosine": 1.0, "sqnr_db": float("inf")}


def tensor_metric_name(output: str, stat: str) -> str:
    return f"tensor.{output}.{stat}"


def tensor_def(output: str, stat: str) -> MetricDef:
    return MetricDef(tensor_metric_name(output, stat), "tensor", "tensor", _TENSOR_UNITS[stat],
                     stat in ("cosine", "sqnr_db"), f"{stat} of output '{output}' against the reference", _TENSOR_IDEAL[stat])


_KIND_RE = re.compile(r"^vqa_accuracy\[([A-Za-z0-9_ \-]+)\]$")


def per_kind_def(kind: str) -> MetricDef:
    """VQA accuracy on one question kind: `vqa_accuracy[colour]`, `vqa_accuracy[count]`, ..."""
    return MetricDef(f"vqa_accuracy[{kind}]", "vqa", "task", "pt", True, f"VQA accuracy on '{kind}' questions")


def base_name(name: str) -> str:
    """`vqa_accuracy[colour]` -> `vqa_accuracy` (for ordering reports by the catalog)."""
    return name.split("[", 1)[0]


def lookup(name: str) -> MetricDef:
    """The definition of a metric name; ValidationError EF902 with a near-miss suggestion if unknown."""
    if name in TASK_METRICS:
        return TASK_METRICS[name]
    k = _KIND_RE.match(name)
    if k:
        return per_kind_def(k.group(1))
    m = _TENSOR_RE.match(name)
    if m and m.group(2) in TENSOR_STATS:
        return tensor_def(m.group(1), m.group(2))
    if m:
        raise ValidationError(f"unknown tensor statistic '{m.group(2)}' in gate metric '{name}'",
                              suggest(m.group(2), TENSOR_STATS), code="EF902")
    choices = list(TASK_METRICS) + ["vqa_accuracy[<question kind>]", "tensor.<output>.<" + "|".join(TENSOR_STATS) + ">"]
    raise ValidationError(f"gate names unknown metric '{name}'", suggest(name, choices), code="EF902")


def format_value(d: MetricDef, value: float | None) -> str:
    """Human form of a value in the metric's unit."""
    if value is None:
        return "n/a"
    if value == float("inf"):
        return "inf"
    if d.unit == "pt":
        return f"{value:.2f}%"
    if d.unit == "fraction":
        return f"{value:.4f}"
    if d.unit == "dB":
        return f"{value:.1f} dB"
    return f"{value:.3g}"


def format_drop(d: MetricDef, drop: float | None) -> str:
    if drop is None:
        return "n/a"
    if d.unit == "pt":
        return f"{drop:+.2f} pt"
    if d.unit == "dB":
        return f"{drop:+.1f} dB"
    return f"{drop:+.4g}"
