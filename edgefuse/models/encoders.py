"""Unimodal encoders: a ViT-style patch encoder and a BERT-style text encoder.

Both end in a projection to the shared fusion width. Position embeddings are sliced by the
input's own length, so text length stays a dynamic axis in an exported graph.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgefuse.models.layers import EncoderLayer


def eager() -> bool:
    """True outside export/compile tracing: only then may Python checks on shapes raise."""
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling())


def check_length(length: int, max_length: int) -> None:
    """Typed error for text longer than the position table (eager only; export keeps shapes symbolic)."""
    if eager() and length > max_length:
        from edgefuse.errors import ModelError

        raise ModelError(f"text length {length} exceeds the model's max_text_length {max_length}",
                         f"tokenize with max_length <= {max_length}", code="EF307")


class PatchEmbedding(nn.Module):
    """Image [B, 3, S, S] -> patch tokens [B, P, width] (Conv patchify + learned positions)."""

    def __init__(self, image_size: int, patch_size: int, width: int, channels: int = 3) -> None:
        super().__init__()
        if image_size % patch_size != 0:
            from edgefuse.errors import ModelError

            raise ModelError(f"image size {image_size} is not a multiple of patch size {patch_size}",
                             "pick a patch size that divides the image size", code="EF302")
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_patches = (image_size // patch_size) ** 2
        self.proj = nn.Conv2d(channels, width, kernel_size=patch_size, stride=patch_size)
        self.position = nn.Parameter(torch.randn(1, self.num_patches, width) * 0.02)

    def forward(self, pixel_values: Tensor) -> Tensor:
        x = self.proj(pixel_values).flatten(2).transpose(1, 2)
        return x + self.position


class PatchEncoder(nn.Module):
    """ViT-style encoder: patch embedding, [CLS], learned positions, pre-norm layers, projection.

    Returns tokens [B, 1 + P, out_dim]; token 0 is [CLS].
    """

    def __init__(self, image_size: int = 64, patch_size: int = 8, width: int = 128, layers: int = 2, heads: int = 4,
                 ffn_dim: int = 256, out_dim: int | None = None, dropout: float = 0.0, attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = PatchEmbedding(image_size, patch_size, width)
        self.num_patches = self.embed.num_patches
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.cls_position = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList([EncoderLayer(width, heads, ffn_dim, dropout, pre_norm=True, attention_dropout=attention_dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, out_dim) if out_dim is not None and out_dim != width else nn.Identity()
        self.out_dim = out_dim or width

    def forward(self, pixel_values: Tensor) -> Tensor:
        x = self.embed(pixel_values)
        cls = (self.cls + self.cls_position).expand(x.shape[0], -1, -1)
        x = self.dropout(torch.cat([cls, x], dim=1))
        for layer in self.layers:
            x, _ = layer(x)
        return self.proj(self.norm(x))


class TextEmbedding(nn.Module):
    """BERT embeddings: token + position (sliced by length) + token type 0, then LayerNorm."""

    def __init__(self, vocab_size: int, width: int, max_length: int = 32, type_vocab_size: int = 2, eps: float = 1e-5,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab_size, width)
        self.position = nn.Embedding(max_length, width)
        self.token_type = nn.Embedding(type_vocab_size, width)
        self.norm = nn.LayerNorm(width, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.max_length = max_length

    def forward(self, input_ids: Tensor) -> Tensor:
        length = input_ids.shape[1]
        check_length(length, self.max_length)
        x = self.word(input_ids) + self.position.weight[:length][None] + self.token_type.weight[0]
        return self.dropout(self.norm(x))


class TextEncoder(nn.Module):
    """BERT-style encoder (post-norm layers, GELU FFN) with a projection to the shared width.

    `hidden(input_ids, attention_mask)` gives the BERT hidden states [B, L, width] (what a
    Hugging Face BertModel calls last_hidden_state); `forward` adds the projection.
    """

    def __init__(self, vocab_size: int, width: int = 128, layers: int = 2, heads: int = 4, ffn_dim: int = 256,
                 max_length: int = 32, out_dim: int | None = None, dropout: float = 0.0, type_vocab_size: int = 2,
                 eps: float = 1e-5, attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = TextEmbedding(vocab_size, width, max_length, type_vocab_size, eps, dropout)
        self.layers = nn.ModuleList([EncoderLayer(width, heads, ffn_dim, dropout, pre_norm=False, eps=eps, attention_dropout=attention_dropout)
                                     for _ in range(layers)])
        self.proj = nn.Linear(width, out_dim) if out_dim is not None and out_dim != width else nn.Identity()
        self.width = width
        self.out_dim = out_dim or width

    def hidden(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        x = self.embed(input_ids)
        for layer in self.layers:
            x, _ = layer(x, attention_mask)
        return x

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.proj(self.hidden(input_ids, attention_mask))
