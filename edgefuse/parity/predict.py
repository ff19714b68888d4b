"""Running one model over the evaluation set: shared feeds, PyTorch and Runner predictors, captioners.

The feeds are built once and given to the reference and to every artifact, so both sides see
byte-identical inputs; rows that only fill a fixed-size batch are dropped from the outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefuse.errors import ValidationError
from edgefuse.parity.evalset import EvalSet
from edgefuse.parity.scoring import TaskOutputs

DEFAULT_BATCH = 32

Predict = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class Feeds:
    """Pre-built batches per task, shared by the reference and every artifact."""

    pixel_values: np.ndarray
    batches: dict[str, list[tuple[np.ndarray, dict[str, np.ndarray]]]]  # task -> [(rows, feed)]


def build_feeds(ev: EvalSet, tokenizer: Any, image_size: int, max_text_length: int, batch_size: int,
                pad_to: int | None = None, fixed_batch: bool = False) -> Feeds:
    """Batches of (image, text) rows per task. `pad_to` pads texts to a fixed length; `fixed_batch`
    fills the last batch of each task to `batch_size` by repeating its rows (for fixed-shape engines;
    `collect` drops the repeats)."""
    from edgefuse.data.preprocess import preprocess_images

    pix = preprocess_images([it.image for it in ev.items], size=image_size)
    pairs: dict[str, list[tuple[int, str]]] = {
        "vqa": [(i, q) for i, q, _ in ev.vqa],
        "itm": [(i, c) for i, c, _ in ev.itm],
        "grounding": [(i, p) for i, p, _ in ev.grounding],
        # every gallery image with every gallery caption, row-major: sim[i, j]
        "retrieval": [(i, c) for i, _ in ev.retrieval for _, c in ev.retrieval],
    }
    batches: dict[str, list[tuple[np.ndarray, dict[str, np.ndarray]]]] = {}
    for task, rows in pairs.items():
        out = []
        for s in range(0, len(rows), batch_size):
            chunk = rows[s: s + batch_size]
            img = np.array([i for i, _ in chunk], dtype=np.int64)
            ids, mask = tokenizer.encode_batch([t for _, t in chunk], max_length=max_text_length, pad_to=pad_to)
            feed = {"pixel_values": np.ascontiguousarray(pix[img]), "input_ids": ids, "attention_mask": mask}
            if fixed_batch and len(chunk) < batch_size:
                take = np.resize(np.arange(len(chunk)), batch_size)
                feed = {k: np.ascontiguousarray(v[take]) for k, v in feed.items()}
            out.append((img, feed))
        batches[task] = out
    return Feeds(pix, batches)


_TASK_TENSORS = {"vqa": ("vqa_logits",), "itm": ("itm_logits",), "grounding": ("box", "grounding_attention")}


def collect(predict: Predict, feeds: Feeds, ev: EvalSet, captioner: Callable[[np.ndarray], tuple[list[str], np.ndarray | None]] | None = None,
            caption_batch: int = DEFAULT_BATCH) -> TaskOutputs:
    """Run one model over all task feeds; keep each task's own outputs."""
    out = TaskOutputs()
    for task, names in _TASK_TENSORS.items():
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for rows, feed in feeds.batches.get(task, []):
            res = predict(feed)
            for n in names:
                if n in res:  # rows beyond len(rows) only fill a fixed-size batch
                    parts[n].append(np.asarray(res[n], dtype=np.float32)[: len(rows)])
        for n, p in parts.items():
            if p:
                out.tensors[n] = np.concatenate(p)
    if feeds.batches.get("retrieval"):
        margins = []
        for rows, feed in feeds.batches["retrieval"]:
            lg = np.asarray(predict(feed)["itm_logits"], dtype=np.float64)[: len(rows)]
            margins.append(lg[:, 1] - lg[:, 0])
        k = len(ev.retrieval)
        out.retrieval = np.concatenate(margins).reshape(k, k)
    if captioner is not None and ev.captions:
        idx = np.array([i for i, _ in ev.captions], dtype=np.int64)
        caps: list[str] = []
        toks: list[np.ndarray] = []
        for s in range(0, len(idx), caption_batch):
            c, t = captioner(np.ascontiguousarray(feeds.pixel_values[idx[s: s + caption_batch]]))
            caps += c
            if t is not None:
                toks.append(np.asarray(t, dtype=np.float32))
        out.captions = caps
        if toks:
            out.tensors["image_tokens"] = np.concatenate(toks)
    return out


def torch_predictor(model: Any) -> Predict:
    import torch

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            res = model(*(torch.from_numpy(feed[k]) for k in ("pixel_values", "input_ids", "attention_mask")))
        return {k: v.float().numpy() for k, v in res.items()}

    return run


def torch_captioner(model: Any, tokenizer: Any) -> Callable[[np.ndarray], tuple[list[str], np.ndarray]]:
    import torch

    def run(pix: np.ndarray) -> tuple[list[str], np.ndarray]:
        with torch.inference_mode():
            t = torch.from_numpy(pix)
            ids = model.generate(t)
            tokens = model.encode_image(t)
        return tokenizer.decode_batch(ids.numpy()), tokens.float().numpy()

    return run


def runner_captioner(folder: Path, manifest: dict[str, Any], provider: str, tokenizer: Any,
                     ) -> tuple[Callable[[np.ndarray], tuple[list[str], np.ndarray]], list[Any]]:
    """Greedy captions through export's torch-free generation loop over image_encoder + decoder."""
    from edgefuse.export.generation import CaptionGenerator, GenerationConfig
    from edgefuse.runtime.runners import open_runner

    if not isinstance(manifest.get("generation"), dict):
        raise ValidationError(f"captioning artifact {folder} has no 'generation' settings in its manifest",
                              "re-export it with `edgefuse export museum-caption`", code="EF913")
    ext = ".onnx" if (folder / "image_encoder.onnx").is_file() else ".engine"  # ONNX artifact or engine folder
    enc = open_runner(folder, provider=provider, file=f"image_encoder{ext}").activate()
    dec = open_runner(folder, provider=provider, file=f"decoder{ext}").activate()
    # the first decoder step has an empty KV cache (past_length 0), which the runner's feed check refuses
    gen = CaptionGenerator(enc, lambda feed: dec.infer(feed, check=False), GenerationConfig.from_dict(manifest["generation"]))

    def run(pix: np.ndarray) -> tuple[list[str], np.ndarray]:
        ids = gen.generate(pix)  # greedy, as the reference's model.generate
        return tokenizer.decode_batch(ids), gen.encode(pix)

    return run, [enc, dec]


