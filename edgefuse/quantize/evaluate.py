"""Run ONNX models with ONNX Runtime and measure what quantization cost: SQNR of the outputs
against FP32, and task metrics on labelled museum data (VQA / ITM accuracy, grounding mIoU).

INT8 QDQ is evaluated in "simulated" mode (graph optimisations off: Q/DQ run as float math,
as TensorRT would compute them) so results do not depend on this host's integer kernels;
"cpu" mode runs the real ORT CPU kernels (NOTES.md: u8s8 saturation without VNNI).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

log = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]
METRICS = ("vqa_accuracy", "vqa_agreement", "itm_accuracy", "grounding_miou")


def make_session(model: onnx.ModelProto, mode: str = "simulated", threads: int = 1):
    """An ORT CPU session over an in-memory model ('simulated' = no graph optimisations)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if mode == "simulated"
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=["NchwcTransformer"])


def run_model(model_or_session: Any, feeds: Sequence[Feed], mode: str = "simulated", threads: int = 1) -> dict[str, np.ndarray]:
    """Outputs over all feeds, concatenated along the batch axis (flattened where shapes vary)."""
    sess = make_session(model_or_session, mode, threads) if isinstance(model_or_session, onnx.ModelProto) else model_or_session
    names = [o.name for o in sess.get_outputs()]
    inputs = {i.name for i in sess.get_inputs()}
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for f in feeds:
        for n, v in zip(names, sess.run(None, {k: v for k, v in f.items() if k in inputs})):
            parts[n].append(np.asarray(v))
    return {n: _join(v) for n, v in parts.items()}


def _join(arrays: list[np.ndarray]) -> np.ndarray:
    """Concatenate along batch; outputs whose other axes vary (a growing KV cache) are flattened."""
    if not arrays:
        return np.zeros(0, np.float32)
    if arrays[0].ndim == 0:
        return np.stack(arrays)
    if all(a.shape[1:] == arrays[0].shape[1:] for a in arrays):
        return np.concatenate(arrays, axis=0)
    return np.concatenate([a.ravel() for a in arrays])


def sqnr_db(reference: np.ndarray, output: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when identical)."""
    ref = reference.astype(np.float64)
    noise = float(np.sum((ref - output.astype(np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * float(np.log10(signal / noise))


def output_sqnr(reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: sqnr_db(reference[k], outputs[k]) for k in reference if k in outputs and reference[k].dtype.kind == "f"}


# ---- task metrics on labelled data ---------------------------------------------------------


@dataclass
class EvalSet:
    """Labelled feeds per task, for the outputs the model has."""

    vqa: list[Feed] = field(default_factory=list)
    vqa_labels: np.ndarray | None = None
    itm: list[Feed] = field(default_factory=list)
    itm_labels: np.ndarray | None = None
    ground: list[Feed] = field(default_factory=list)
    ground_boxes: np.ndarray | None = None

    @property
    def sizes(self) -> dict[str, int]:
        return {"vqa": 0 if self.vqa_labels is None else len(self.vqa_labels),
                "itm": 0 if self.itm_labels is None else len(self.itm_labels),
                "grounding": 0 if self.ground_boxes is None else len(self.ground_boxes)}


def build_eval_set(outputs: Sequence[str], answers: Sequence[str] | None, preprocessor: Any, n: int = 200,
                   split: str = "val", batch: int = 16) -> EvalSet:
    """About `n` labelled samples per task from the museum `split` (never the calibration split)."""
    from edgefuse.data import museum

    items = museum.generate(split, n=max(4, n // 3))
    es = EvalSet()

    def batches(rows: list[tuple[np.ndarray, str]]) -> list[Feed]:
        return [preprocessor([r[0] for r in rows[i:i + batch]], [r[1] for r in rows[i:i + batch]]) for i in range(0, len(rows), batch)]

    if "vqa_logits" in outputs and answers:
        index = {a: i for i, a in enumerate(answers)}
        rows = [(it.image, q.question, index.get(q.answer, -1)) for it in items for q in it.questions][:n]
        es.vqa = batches([(r[0], r[1]) for r in rows])
        es.vqa_labels = np.array([r[2] for r in rows], np.int64)
    if "itm_logits" in outputs:
        rows2 = [(it.image, c, 1) for it in items for c in it.captions[:1]] + [(it.image, c, 0) for it in items for c in it.negative_captions[:1]]
        rows2 = sorted(rows2[: 2 * (n // 2)], key=lambda r: r[2])
        es.itm = batches([(r[0], r[1]) for r in rows2])
        es.itm_labels = np.array([r[2] for r in rows2], np.int64)
    if "box" in outputs:
        rows3 = [(it.image, r.phrase, r.box) for it in items for r in it.refs][:n]
        es.ground = batches([(r[0], r[1]) for r in rows3])
        es.ground_boxes = np.array([r[2] for r in rows3], np.float32) if rows3 else None
    return es


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    try:
        from edgefuse.parity.metrics import box_iou

        return np.asarray(box_iou(a, b))
    except ImportError:  # pragma: no cover - parity room missing
        x1 = np.maximum(a[:, 0], b[:, 0]); y1 = np.maximum(a[:, 1], b[:, 1])  # noqa: E702
        x2 = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]); y2 = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])  # noqa: E702
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        return inter / np.maximum(a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter, 1e-12)


@dataclass
class TaskRun:
    """A model's raw task outputs on an EvalSet (kept to compute agreement with another run)."""

    vqa_logits: np.ndarray | None = None
    itm_logits: np.ndarray | None = None
    box: np.ndarray | None = None


def run_tasks(model: onnx.ModelProto, es: EvalSet, mode: str = "simulated", threads: int = 1) -> TaskRun:
    sess = make_session(model, mode, threads)
    tr = TaskRun()
    if es.vqa:
        tr.vqa_logits = run_model(sess, es.vqa)["vqa_logits"]
    if es.itm:
        tr.itm_logits = run_model(sess, es.itm)["itm_logits"]
    if es.ground:
        tr.box = run_model(sess, es.ground)["box"]
    return tr


def task_metrics(es: EvalSet, run: TaskRun, reference: TaskRun | None = None) -> dict[str, float]:
    """Metrics in percent (drops are then percentage points)."""
    out: dict[str, float] = {}
    if run.vqa_logits is not None and es.vqa_labels is not None:
        pred = run.vqa_logits.argmax(-1)
        out["vqa_accuracy"] = 100.0 * float(np.mean(pred == es.vqa_labels))
        if reference is not None and reference.vqa_logits is not None:
            out["vqa_agreement"] = 100.0 * float(np.mean(pred == reference.vqa_logits.argmax(-1)))
    if run.itm_logits is not None and es.itm_labels is not None:
        out["itm_accuracy"] = 100.0 * float(np.mean(run.itm_logits.argmax(-1) == es.itm_labels))
    if run.box is not None and es.ground_boxes is not None:
        out["grounding_miou"] = 100.0 * float(np.mean(_iou(run.box, es.ground_boxes)))
    return out


def metric_drops(reference: dict[str, float], value: dict[str, float]) -> dict[str, float]:
    """Reference minus value for each metric both have (agreement: 100 minus agreement)."""
    drops = {k: reference[k] - value[k] for k in value if k in reference}
    if "vqa_agreement" in value:
        drops["vqa_agreement"] = 100.0 - value["vqa_agreement"]
    return drops
