"""Captioning: a patch encoder plus a transformer decoder with a KV cache made for ONNX export.

The decoder's self-attention cache is two explicit tensors (all layers stacked), so an
exported decoder step has a fixed set of inputs/outputs and one dynamic `past_length` axis:

    decode_step(input_ids      int64   [batch, new_length],
                image_tokens   float32 [batch, num_image_tokens, dim],
                past_keys      float32 [layers, batch, heads, past_length, head_dim],
                past_values    float32 [layers, batch, heads, past_length, head_dim])
      -> (logits           float32 [batch, new_length, vocab_size],
          present_keys     float32 [layers, batch, heads, past_length + new_length, head_dim],
          present_values   float32 [layers, batch, heads, past_length + new_length, head_dim])

The first step passes past tensors with past_length = 0 (`empty_cache`). Token ids follow
the shared tokenizer: generation starts at `bos_id` ([CLS]) and stops at `eos_id` ([SEP]).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgefuse.models.encoders import check_length
from edgefuse.models.fusion import image_encoder_from
from edgefuse.models.layers import CrossAttention, FeedForward, causal_bias, init_weights

NEG = -1.0e9  # score for impossible beam candidates (torch-side generation only, never exported)


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer: causal self-attention (with cache), cross-attention to image tokens, FFN."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.0, attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.self_attn = CrossAttention(dim, heads, attention_dropout)
        self.cross_attn = CrossAttention(dim, heads, attention_dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, image: Tensor, past_k: Tensor, past_v: Tensor, bias: Tensor,
                key_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        h = self.norm1(x)
        a = self.self_attn
        k = torch.cat([past_k, a.split(a.k(h))], dim=2)
        v = torch.cat([past_v, a.split(a.v(h))], dim=2)
        out, _ = a.attend(a.split(a.q(h)), k, v, key_mask, bias)
        x = x + self.dropout(a.o(out))
        c, _ = self.cross_attn(self.norm2(x), image)
        x = x + self.dropout(c)
        x = x + self.dropout(self.ffn(self.norm3(x)))
        return x, k, v


class CaptionModel(nn.Module):
    """Patch encoder + transformer decoder; greedy and beam generation in torch."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        self.tasks = list(config["tasks"])
        d = self.dim = int(config["dim"])
        self.num_heads = int(config["heads"])
        self.head_dim = d // self.num_heads
        self.num_layers = int(config["decoder_layers"])
        self.max_length = int(config["max_text_length"])
        self.bos_id = int(config["bos_id"])
        self.eos_id = int(config["eos_id"])
        self.pad_id = int(config["pad_id"])
        dropout = config.get("dropout", 0.0)
        self.image_encoder = image_encoder_from(config)
        self.word = nn.Embedding(config["vocab_size"], d)
        self.position = nn.Embedding(self.max_length, d)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList([DecoderLayer(d, self.num_heads, config["ffn_dim"], dropout, config.get("attention_dropout", 0.0)) for _ in range(self.num_layers)])
        self.norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, config["vocab_size"])
        init_weights(self)

    # --- the two exported pieces -------------------------------------------------------------
    def encode_image(self, pixel_values: Tensor) -> Tensor:
        """pixel_values [B, 3, S, S] -> image_tokens [B, 1 + P, D] (token 0 = image [CLS])."""
        return self.image_encoder(pixel_values)

    def empty_cache(self, batch: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """Past keys/values with past_length 0 for the first decoder step."""
        z = like.new_zeros((self.num_layers, batch, self.num_heads, 0, self.head_dim))
        return z, z.clone()

    def _decode(self, input_ids: Tensor, image_tokens: Tensor, past_keys: Tensor, past_values: Tensor,
                key_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        past = past_keys.shape[3]
        new = input_ids.shape[1]
        check_length(past + new, self.max_length)
        x = self.word(input_ids) + self.position.weight[past:past + new][None]
        x = self.dropout(x)
        bias = causal_bias(new, past + new, past, x.device, x.dtype)
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, image_tokens, past_keys[i], past_values[i], bias, key_mask)
            keys.append(k)
            values.append(v)
        hidden = self.norm(x)
        return self.lm_head(hidden), torch.stack(keys), torch.stack(values), hidden

    def decode_step(self, input_ids: Tensor, image_tokens: Tensor, past_keys: Tensor,
                    past_values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One cached decoder step; see the module docstring for the exact signature."""
        logits, keys, values, _ = self._decode(input_ids, image_tokens, past_keys, past_values)
        return logits, keys, values

    # --- training ------------------------------------------------------------------------------
    def forward_features(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        image = self.encode_image(pixel_values)
        pk, pv = self.empty_cache(input_ids.shape[0], image)
        logits, _, _, hidden = self._decode(input_ids, image, pk, pv, attention_mask)
        return {"image_tokens": image, "text_tokens": hidden, "caption_logits": logits}

    def forward(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        """Teacher forcing: `caption_logits` [B, L, V], position t predicts token t + 1 of input_ids."""
        return {"caption_logits": self.forward_features(pixel_values, input_ids, attention_mask)["caption_logits"]}

    # --- generation ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, pixel_values: Tensor, max_length: int | None = None, num_beams: int = 1,
                 length_penalty: float = 1.0) -> Tensor:
        """Captions as token ids [B, T] starting with bos_id, padded with pad_id after eos_id.

        `max_length` counts the bos token (default: max_text_length). Beam search keeps
        `num_beams` hypotheses with a KV cache and picks the best by sum log-prob / length **
        length_penalty; with num_beams = 1 it is exactly greedy decoding.
        """
        max_length = min(int(max_length or self.max_length), self.max_length)
        image = self.encode_image(pixel_values)
        if num_beams <= 1:
            return self._greedy(image, max_length)
        return self._beam(image, max_length, int(num_beams), length_penalty)

    def _greedy(self, image: Tensor, max_length: int) -> Tensor:
        b = image.shape[0]
        seqs = torch.full((b, 1), self.bos_id, dtype=torch.long, device=image.device)
        pk, pv = self.empty_cache(b, image)
        finished = torch.zeros(b, dtype=torch.bool, device=image.device)
        step = seqs
        for _ in range(max_length - 1):
            logits, pk, pv = self.decode_step(step, image, pk, pv)
            nxt = logits[:, -1].argmax(-1)
            nxt = torch.where(finished, torch.full_like(nxt, self.pad_id), nxt)
            seqs = torch.cat([seqs, nxt[:, None]], dim=1)
            finished = finished | (nxt == self.eos_id)
            if bool(finished.all()):
                break
            step = nxt[:, None]
        return seqs

    def _beam(self, image: Tensor, max_length: int, k: int, length_penalty: float) -> Tensor:
        b = image.shape[0]
        dev = image.device
        image = image.repeat_interleave(k, dim=0)
        seqs = torch.full((b * k, 1), self.bos_id, dtype=torch.long, device=dev)
        scores = torch.zeros(b, k, device=dev)
        scores[:, 1:] = NEG  # all beams start identical: keep one live to avoid duplicates
        finished = torch.zeros(b * k, dtype=torch.bool, device=dev)
        lengths = torch.zeros(b * k, device=dev)
        pk, pv = self.empty_cache(b * k, image)
        step = seqs
        for _ in range(max_length - 1):
            logits, pk, pv = self.decode_step(step, image, pk, pv)
            logp = F.log_softmax(logits[:, -1].float(), dim=-1)
            vocab = logp.shape[-1]
            done_row = torch.full((vocab,), NEG, device=dev)
            done_row[self.pad_id] = 0.0  # a finished beam only continues with pad, at no cost
            logp = torch.where(finished[:, None], done_row[None], logp)
            cand = (scores.reshape(-1, 1) + logp).reshape(b, k * vocab)
            top, idx = cand.topk(k, dim=-1)
            src = (torch.arange(b, device=dev)[:, None] * k + idx // vocab).reshape(-1)
            tok = (idx % vocab).reshape(-1)
            was_done = finished[src]
            seqs = torch.cat([seqs[src], tok[:, None]], dim=1)
            lengths = lengths[src] + (~was_done).float()
            finished = was_done | (tok == self.eos_id)
            pk, pv = pk[:, src], pv[:, src]
            scores = top
            if bool(finished.all()):
                break
            step = tok[:, None]
        norm = scores.reshape(-1) / lengths.clamp(min=1.0) ** length_penalty
        best = norm.reshape(b, k).argmax(-1) + torch.arange(b, device=dev) * k
        return seqs[best]

    def export_modules(self) -> dict[str, nn.Module]:
        """The two graphs to export: `image_encoder` and `decoder` (decode_step), with ONNX names."""
        return {"image_encoder": ImageEncoderGraph(self), "decoder": DecoderStepGraph(self)}


class ImageEncoderGraph(nn.Module):
    """pixel_values -> image_tokens (input/output names for ONNX: pixel_values / image_tokens)."""

    input_names = ("pixel_values",)
    output_names = ("image_tokens",)

    def __init__(self, model: CaptionModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.model.encode_image(pixel_values)


class DecoderStepGraph(nn.Module):
    """CaptionModel.decode_step as a module (names as in the caption module docstring)."""

    input_names = ("input_ids", "image_tokens", "past_keys", "past_values")
    output_names = ("logits", "present_keys", "present_values")

    def __init__(self, model: CaptionModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, image_tokens: Tensor, past_keys: Tensor,
                past_values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.model.decode_step(input_ids, image_tokens, past_keys, past_values)
