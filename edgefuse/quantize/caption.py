"""Captioning artifacts (image_encoder.onnx + decoder.onnx): calibration feeds for each graph
and caption metrics, over the same torch-free generation loop the kiosk uses.

The decoder is calibrated on the feeds it really sees: the FP32 graphs caption the calibration
images greedily and every decoder step's inputs (token, image tokens, growing KV cache) are
recorded, then thinned evenly to the sample budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from edgefuse.quantize.evaluate import make_session

Feed = dict[str, np.ndarray]


def _generator(encoder: onnx.ModelProto, decoder: Any, gen: Any, mode: str, threads: int):
    from edgefuse.export.generation import CaptionGenerator

    dec = make_session(decoder, mode, threads) if isinstance(decoder, onnx.ModelProto) else decoder
    return CaptionGenerator(make_session(encoder, mode, threads), dec, gen)


def decoder_feeds(encoder: onnx.ModelProto, decoder: onnx.ModelProto, gen: Any, pixel_values: Sequence[np.ndarray],
                  max_feeds: int, threads: int = 1) -> list[Feed]:
    """Every decoder step of greedy FP32 captioning of `pixel_values`, thinned to `max_feeds`."""
    from edgefuse.export.generation import as_graph_fn

    sess = make_session(decoder, "cpu", threads)
    inner = as_graph_fn(sess)
    seen: list[Feed] = []

    def record(feed: Feed):
        seen.append({k: np.array(v, copy=True) for k, v in feed.items()})
        return inner(feed)

    g = _generator(encoder, record, gen, "cpu", threads)
    for pv in pixel_values:
        g.generate(pv)
    if len(seen) <= max_feeds:
        return seen
    idx = np.unique(np.linspace(0, len(seen) - 1, max_feeds).round().astype(int))
    return [seen[i] for i in idx]


def caption_run(encoder: onnx.ModelProto, decoder: onnx.ModelProto, gen: Any, pixel_values: np.ndarray, tokenizer: Any,
                mode: str = "cpu", threads: int = 1, batch: int = 8) -> list[str]:
    g = _generator(encoder, decoder, gen, mode, threads)
    out: list[str] = []
    for i in range(0, len(pixel_values), batch):
        ids = g.generate(pixel_values[i:i + batch])
        out += [tokenizer.decode(row) for row in ids]
    return out


def caption_metrics(captions: Sequence[str], references: Sequence[Sequence[str]], reference_captions: Sequence[str] | None = None) -> dict[str, float]:
    """BLEU-4 against the labelled captions and exact agreement with the FP32 captions (percent)."""
    from edgefuse.parity.metrics import bleu4, normalise_caption

    out = {"caption_bleu4": 100.0 * float(bleu4(list(captions), [list(r) for r in references]))}
    if reference_captions is not None:
        same = [normalise_caption(a) == normalise_caption(b) for a, b in zip(captions, reference_captions)]
        out["caption_agreement"] = 100.0 * float(np.mean(same)) if same else 0.0
    return out
