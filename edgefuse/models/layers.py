"""Building blocks of the fusion zoo, written to export cleanly to ONNX.

Attention is plain matmuls with a *finite* additive mask bias (never -inf: -inf breaks INT8
calibration and FP16), LayerNorm is nn.LayerNorm (one op at opset >= 17), and every shape is
read from the input tensors, so batch and text length stay dynamic in an exported graph.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

# Additive bias for masked keys: exp(-1e4) underflows to 0 in fp32 and fp16, yet stays finite.
MASK_BIAS = -1.0e4


def mask_to_bias(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Key mask [B, Nk] (1 = keep, 0 = drop) -> additive bias [B, 1, 1, Nk] (0 or MASK_BIAS)."""
    return ((1.0 - mask.to(dtype)) * MASK_BIAS)[:, None, None, :]


def causal_bias(num_queries: Tensor | int, num_keys: Tensor | int, past: Tensor | int, device: torch.device,
                dtype: torch.dtype) -> Tensor:
    """Finite causal bias [Nq, Nk]: query i (absolute position past + i) sees keys 0..past + i."""
    q = torch.arange(num_queries, device=device)[:, None] + past
    k = torch.arange(num_keys, device=device)[None, :]
    return (k > q).to(dtype) * MASK_BIAS


class CrossAttention(nn.Module):
    """Multi-head attention with separate Q/K/V/O projections: softmax(QK^T / sqrt(d_head)) V.

    `forward(query, context, mask=None, bias=None)`: query [B, Nq, D], context [B, Nk, D];
    `mask` [B, Nk] (1 = keep) becomes a finite additive bias; `bias` is any extra additive
    bias broadcastable to [B, heads, Nq, Nk] (e.g. a causal one). Returns (output [B, Nq, D],
    weights [B, heads, Nq, Nk]). Self-attention is `attn(x, x, mask)`.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads != 0:
            from edgefuse.errors import ModelError

            raise ModelError(f"attention width {dim} is not divisible by {heads} heads", "pick a width that is a multiple of heads",
                             code="EF301")
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def split(self, x: Tensor) -> Tensor:
        """[B, N, D] -> [B, heads, N, head_dim]."""
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
               bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-head attention on already split q/k/v; returns merged output (before O) and weights."""
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        if mask is not None:
            scores = scores + mask_to_bias(mask, scores.dtype)
        if bias is not None:
            scores = scores + bias
        weights = torch.softmax(scores, dim=-1)
        out = torch.matmul(self.dropout(weights), v)
        return out.transpose(1, 2).flatten(2), weights

    def forward(self, query: Tensor, context: Tensor, mask: Tensor | None = None,
                bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
        q = self.split(self.q(query))
        k = self.split(self.k(context))
        v = self.split(self.v(context))
        out, weights = self.attend(q, k, v, mask, bias)
        return self.o(out), weights


class FeedForward(nn.Module):
    """Position-wise MLP: Linear -> GELU -> dropout -> Linear."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(self.act(self.fc1(x))))


class EncoderLayer(nn.Module):
    """Transformer encoder layer; post-norm (BERT) or pre-norm (ViT). Returns (x, attention weights).

    `dropout` acts on the residual branches, `attention_dropout` on the attention weights
    (0 by default, as in ViT: dropping the [B, H, N, N] weights is costly on a CPU).
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.0, pre_norm: bool = False,
                 eps: float = 1e-5, attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.attn = CrossAttention(dim, heads, attention_dropout)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.pre_norm:
            h = self.norm1(x)
            a, w = self.attn(h, h, mask)
            x = x + self.dropout(a)
            x = x + self.dropout(self.ffn(self.norm2(x)))
            return x, w
        a, w = self.attn(x, x, mask)
        x = self.norm1(x + self.dropout(a))
        x = self.norm2(x + self.dropout(self.ffn(x)))
        return x, w


class FusionLayer(nn.Module):
    """Dual-stream co-attention layer (ViLBERT style).

    Per stream self-attention, then bidirectional cross-attention (text queries attend to
    image tokens, image queries attend to text tokens), then an FFN per stream; each step is
    residual + LayerNorm. Returns (text, image, text_to_image [B, H, Nt, Ni],
    image_to_text [B, H, Ni, Nt]).
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.0, attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.text_self = CrossAttention(dim, heads, attention_dropout)
        self.image_self = CrossAttention(dim, heads, attention_dropout)
        self.text_cross = CrossAttention(dim, heads, attention_dropout)  # text -> image
        self.image_cross = CrossAttention(dim, heads, attention_dropout)  # image -> text
        self.text_ffn = FeedForward(dim, ffn_dim, dropout)
        self.image_ffn = FeedForward(dim, ffn_dim, dropout)
        self.text_norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(3)])
        self.image_norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(3)])
        self.dropout = nn.Dropout(dropout)

    def forward(self, text: Tensor, image: Tensor, text_mask: Tensor | None = None,
                image_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        t, _ = self.text_self(text, text, text_mask)
        text = self.text_norms[0](text + self.dropout(t))
        v, _ = self.image_self(image, image, image_mask)
        image = self.image_norms[0](image + self.dropout(v))
        t, text_to_image = self.text_cross(text, image, image_mask)
        v, image_to_text = self.image_cross(image, text, text_mask)
        text = self.text_norms[1](text + self.dropout(t))
        image = self.image_norms[1](image + self.dropout(v))
        text = self.text_norms[2](text + self.dropout(self.text_ffn(text)))
        image = self.image_norms[2](image + self.dropout(self.image_ffn(image)))
        return text, image, text_to_image, image_to_text


class GatedFusion(nn.Module):
    """alpha = sigmoid(W_g [V; T] + b_g); M = alpha * V + (1 - alpha) * T. Returns (M, alpha).

    Works on pooled vectors [B, D] or on aligned tokens [B, N, D] (the gate is per feature).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gate = nn.Linear(2 * dim, dim)

    def forward(self, image: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        alpha = torch.sigmoid(self.gate(torch.cat([image, text], dim=-1)))
        return alpha * image + (1.0 - alpha) * text, alpha


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over tokens [B, N, D] where mask [B, N] is 1; padding never contributes."""
    m = mask.to(x.dtype)[:, :, None]
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT-style init: normal(0, std) for Linear/Embedding/Conv weights, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
