"""Metrics of the FP32 PyTorch model on a museum split (what `edgefuse eval` prints).

VQA accuracy (overall and per question kind), ITM accuracy + AUC (every true caption
against every same-scene non-matching caption), grounding mean IoU + rate of IoU >= 0.5,
captioning BLEU-4 + exact match (greedy decoding unless beams are asked for). The inputs
go through the same rendering as training (edgefuse.data.preprocess + the shipped
tokenizer), so train and eval never disagree on preprocessing.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgefuse.models.metrics import accuracy, accuracy_by_group, bleu4, box_iou, caption_exact_match, roc_auc
from edgefuse.models.train import TextTable, TrainingData, render_items

log = logging.getLogger(__name__)


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


@torch.no_grad()
def _run(model: torch.nn.Module, data: TrainingData, table: TextTable, rows: np.ndarray, batch_size: int,
         device: torch.device) -> dict[str, np.ndarray]:
    """Model outputs for the given rows of a text table, batched, text trimmed per batch."""
    outs: dict[str, list[np.ndarray]] = {}
    for sl in _batches(len(rows), batch_size):
        r = rows[sl]
        mask = table.mask[r]
        width = max(int(mask.sum(axis=1).max()), 2)
        pix = torch.as_tensor(data.images[table.image[r]], device=device)
        ids = torch.as_tensor(table.ids[r][:, :width], device=device)
        res = model(pix, ids, torch.as_tensor(mask[:, :width], device=device))
        for k, v in res.items():
            outs.setdefault(k, []).append(v.float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


def _nan_to_none(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def evaluate_model(
    model: torch.nn.Module,
    tasks: list[str],
    items: list[Any],
    device: str = "cpu",
    batch_size: int = 64,
    num_beams: int = 1,
) -> dict[str, Any]:
    """Metrics of `model` (any zoo model, in eval mode) on museum-format items."""
    from edgefuse.data.museum import answer_vocabulary
    from edgefuse.data.tokenizer import default_tokenizer

    dev = torch.device(device)
    model = model.to(dev).eval()
    tok = default_tokenizer()
    answers = answer_vocabulary()
    cfg = model.config
    data = render_items(items, tok, answers, int(cfg["image_size"]), int(cfg["max_text_length"]))
    result: dict[str, Any] = {"images": len(items)}
    if "vqa" in tasks:
        rows = np.arange(len(data.answers))
        logits = _run(model, data, data.questions, rows, batch_size, dev)["vqa_logits"] if len(rows) else np.zeros((0, len(answers)))
        pred = logits.argmax(axis=1) if len(rows) else np.zeros(0, dtype=np.int64)
        result["vqa"] = {
            "accuracy": _nan_to_none(accuracy(pred, data.answers)),
            "by_kind": {k: _nan_to_none(v) for k, v in accuracy_by_group(pred, data.answers, data.kinds).items()},
            "questions": int(len(rows)),
            "out_of_vocabulary": int((data.answers < 0).sum()),
        }
    if "itm" in tasks:
        pos = _run(model, data, data.captions, np.arange(len(data.captions.image)), batch_size, dev)["itm_logits"]
        neg = _run(model, data, data.negatives, np.arange(len(data.negatives.image)), batch_size, dev)["itm_logits"]
        logits = np.concatenate([pos, neg])
        labels = np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)])
        z = logits - logits.max(axis=1, keepdims=True)
        p_match = np.exp(z[:, 1]) / np.exp(z).sum(axis=1)
        result["itm"] = {
            "accuracy": _nan_to_none(accuracy(logits.argmax(axis=1), labels)),
            "auc": _nan_to_none(roc_auc(p_match, labels)),
            "positives": int(len(pos)),
            "negatives": int(len(neg)),
        }
    if "grounding" in tasks:
        boxes = _run(model, data, data.phrases, np.arange(len(data.phrases.image)), batch_size, dev)["box"]
        iou = box_iou(boxes, data.boxes)
        result["grounding"] = {
            "mean_iou": _nan_to_none(float(iou.mean()) if len(iou) else float("nan")),
            "iou_at_0.5": _nan_to_none(float((iou >= 0.5).mean()) if len(iou) else float("nan")),
            "phrases": int(len(iou)),
        }
    if "captioning" in tasks:
        hyps: list[str] = []
        with torch.no_grad():
            for sl in _batches(data.n_images, batch_size):
                seqs = model.generate(torch.as_tensor(data.images[sl], device=dev), num_beams=num_beams)
                hyps += [tok.decode(s) for s in seqs.cpu().numpy()]
        refs = [list(it.captions) for it in items]
        result["captioning"] = {
            "bleu4": _nan_to_none(bleu4(hyps, refs)),
            "exact_match": _nan_to_none(caption_exact_match(hyps, refs)),
            "images": len(hyps),
            "beams": num_beams,
            "examples": [{"image_id": it.image_id, "caption": h, "reference": it.captions[0]} for it, h in list(zip(items, hyps))[:3]],
        }
    return result


def evaluate(
    name: str,
    split: str = "test",
    n: int | None = None,
    weights: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    num_beams: int = 1,
    data_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Load zoo model `name` (shipped weights unless `weights`) and measure it on a museum split
    (or on a folder in the dataset format when `data_dir` is given)."""
    from edgefuse.models.zoo import get_entry, load_model

    entry = get_entry(name)
    t0 = time.perf_counter()
    model = load_model(name, weights=weights)
    if data_dir is not None:
        from edgefuse.data.dataset import read_dataset

        items = read_dataset(data_dir)
        items = items[:n] if n is not None else items
        source = str(data_dir)
    else:
        from edgefuse.data.museum import generate

        items = generate(split, n=n)
        source = f"museum/{split}"
    res = evaluate_model(model, list(entry.tasks), items, device=device, batch_size=batch_size, num_beams=num_beams)
    from edgefuse.models.zoo import weights_file

    return {
        "model": name,
        "weights": str(weights) if weights is not None else str(weights_file(name)),
        "data": source,
        "device": device,
        "params": int(sum(p.numel() for p in model.parameters())),
        "torch": torch.__version__,
        "wall_s": round(time.perf_counter() - t0, 1),
        **res,
    }
