"""Caption generation over the exported `image_encoder` + `decoder` graphs, without torch.

The kiosk (edgefuse.runtime, torch-free) calls this with two ONNX Runtime sessions or
Runners. It mirrors CaptionModel.generate in edgefuse.models.caption step for step (greedy:
argmax per step, rows that emitted eos continue with pad; beam: sum log-prob, length
penalty), so ORT captions equal PyTorch's. Numpy only: no torch import here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Feed = dict[str, np.ndarray]
GraphFn = Callable[[Feed], Mapping[str, np.ndarray]]

NEG = -1.0e9  # score of impossible beam candidates (as in edgefuse.models.caption)


@dataclass(frozen=True)
class GenerationConfig:
    """What the generation loop needs to know about the decoder graph (stored in the manifest)."""

    bos_id: int
    eos_id: int
    pad_id: int
    max_length: int  # counts the bos token
    num_layers: int
    num_heads: int
    head_dim: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GenerationConfig:
        return cls(**{k: int(d[k]) for k in cls.__dataclass_fields__})


def as_graph_fn(graph: Any) -> GraphFn:
    """Accept an onnxruntime.InferenceSession, an edgefuse Runner (infer) or a callable."""
    if hasattr(graph, "infer"):
        return lambda feed: graph.infer(feed)
    if hasattr(graph, "run") and hasattr(graph, "get_outputs"):
        names = [o.name for o in graph.get_outputs()]
        inputs = {i.name for i in graph.get_inputs()}
        return lambda feed: dict(zip(names, graph.run(names, {k: v for k, v in feed.items() if k in inputs}), strict=True))
    if callable(graph):
        return graph
    raise TypeError(f"cannot run {type(graph).__name__}: pass an InferenceSession, a Runner or a callable")


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


class CaptionGenerator:
    """Greedy / beam captioning over an exported encoder and decoder step."""

    def __init__(self, encoder: Any, decoder: Any, config: GenerationConfig) -> None:
        self.encoder = as_graph_fn(encoder)
        self.decoder = as_graph_fn(decoder)
        self.config = config

    def _empty_cache(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        z = np.zeros((c.num_layers, batch, c.num_heads, 0, c.head_dim), dtype=np.float32)
        return z, z.copy()

    def encode(self, pixel_values: np.ndarray) -> np.ndarray:
        return np.asarray(self.encoder({"pixel_values": np.ascontiguousarray(pixel_values, dtype=np.float32)})["image_tokens"])

    def step(self, input_ids: np.ndarray, image_tokens: np.ndarray, past_keys: np.ndarray,
             past_values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = self.decoder({"input_ids": np.ascontiguousarray(input_ids, dtype=np.int64), "image_tokens": image_tokens,
                            "past_keys": past_keys, "past_values": past_values})
        return np.asarray(out["logits"]), np.asarray(out["present_keys"]), np.asarray(out["present_values"])

    def generate(self, pixel_values: np.ndarray, max_length: int | None = None, num_beams: int = 1,
                 length_penalty: float = 1.0) -> np.ndarray:
        """Token ids [B, T] starting with bos, padded with pad after eos (as CaptionModel.generate)."""
        c = self.config
        max_length = min(int(max_length or c.max_length), c.max_length)
        image = self.encode(pixel_values)
        if num_beams <= 1:
            return self._greedy(image, max_length)
        return self._beam(image, max_length, int(num_beams), length_penalty)

    def _greedy(self, image: np.ndarray, max_length: int) -> np.ndarray:
        c = self.config
        b = image.shape[0]
        seqs = np.full((b, 1), c.bos_id, dtype=np.int64)
        pk, pv = self._empty_cache(b)
        finished = np.zeros(b, dtype=bool)
        step = seqs
        for _ in range(max_length - 1):
            logits, pk, pv = self.step(step, image, pk, pv)
            nxt = logits[:, -1].argmax(-1).astype(np.int64)
            nxt = np.where(finished, c.pad_id, nxt)
            seqs = np.concatenate([seqs, nxt[:, None]], axis=1)
            finished = finished | (nxt == c.eos_id)
            if finished.all():
                break
            step = nxt[:, None]
        return seqs

    def _beam(self, image: np.ndarray, max_length: int, k: int, length_penalty: float) -> np.ndarray:
        c = self.config
        b = image.shape[0]
        image = np.repeat(image, k, axis=0)
        seqs = np.full((b * k, 1), c.bos_id, dtype=np.int64)
        scores = np.zeros((b, k), dtype=np.float32)
        scores[:, 1:] = NEG  # all beams start identical: keep one live to avoid duplicates
        finished = np.zeros(b * k, dtype=bool)
        lengths = np.zeros(b * k, dtype=np.float32)
        pk, pv = self._empty_cache(b * k)
        step = seqs
        for _ in range(max_length - 1):
            logits, pk, pv = self.step(step, image, pk, pv)
            logp = log_softmax(logits[:, -1])
            vocab = logp.shape[-1]
            done_row = np.full((vocab,), NEG, dtype=np.float32)
            done_row[c.pad_id] = 0.0
            logp = np.where(finished[:, None], done_row[None], logp)
            cand = (scores.reshape(-1, 1) + logp).reshape(b, k * vocab)
            idx = np.argsort(-cand, axis=-1, kind="stable")[:, :k]
            top = np.take_along_axis(cand, idx, axis=-1)
            src = (np.arange(b)[:, None] * k + idx // vocab).reshape(-1)
            tok = (idx % vocab).reshape(-1).astype(np.int64)
            was_done = finished[src]
            seqs = np.concatenate([seqs[src], tok[:, None]], axis=1)
            lengths = lengths[src] + (~was_done).astype(np.float32)
            finished = was_done | (tok == c.eos_id)
            pk, pv = pk[:, src], pv[:, src]
            scores = top.astype(np.float32)
            if finished.all():
                break
            step = tok[:, None]
        norm = scores.reshape(-1) / np.maximum(lengths, 1.0) ** length_penalty
        best = norm.reshape(b, k).argmax(-1) + np.arange(b) * k
        return seqs[best]


def strip_special(ids: np.ndarray, config: GenerationConfig) -> list[list[int]]:
    """Token ids per row without bos, and cut at eos / pad (what a tokenizer should decode)."""
    out = []
    for row in np.asarray(ids).tolist():
        words = []
        for t in row[1:]:
            if t in (config.eos_id, config.pad_id):
                break
            words.append(int(t))
        out.append(words)
    return out
