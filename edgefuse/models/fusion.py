"""The three fusion architectures of the article: dual-stream, single-stream and gated.

Each takes one plain config dict (see zoo.py), so a model is fully described by JSON, and
exposes `forward(pixel_values, input_ids, attention_mask) -> dict` with exactly its task
outputs plus `forward_features(...)` with the hidden states (`text_tokens`, `image_tokens`,
`cls`) for training-only heads such as masked language modelling.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from edgefuse.models.encoders import PatchEmbedding, PatchEncoder, TextEmbedding, TextEncoder
from edgefuse.models.heads import build_heads, run_heads
from edgefuse.models.layers import CrossAttention, EncoderLayer, FusionLayer, GatedFusion, init_weights, masked_mean


class FusionModel(nn.Module):
    """Shared plumbing: config, task heads, forward = features -> heads."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        self.tasks = list(config["tasks"])
        self.dim = int(config["dim"])

    def init_weights(self) -> None:
        """BERT-style init of every submodule except a pretrained text tower."""
        for name, child in self.named_children():
            if name == "text_encoder" and self.config.get("text_tower"):
                init_weights(child.proj)  # only the projection to the shared width is new
                continue
            init_weights(child)

    def forward_features(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        return run_heads(self.heads, self.forward_features(pixel_values, input_ids, attention_mask))


def image_encoder_from(config: dict[str, Any]) -> PatchEncoder:
    return PatchEncoder(image_size=config["image_size"], patch_size=config["patch_size"],
                        width=config.get("image_width", config["dim"]), layers=config["image_layers"],
                        heads=config["heads"], ffn_dim=config["ffn_dim"], out_dim=config["dim"],
                        dropout=config.get("dropout", 0.0), attention_dropout=config.get("attention_dropout", 0.0))


def text_encoder_from(config: dict[str, Any]) -> TextEncoder:
    """Random-init BERT-style tower, or a pretrained Hugging Face one when `text_tower` is set."""
    tower = config.get("text_tower")
    if tower:
        from edgefuse.models.hf import load_text_tower

        return load_text_tower(tower, out_dim=config["dim"], dropout=config.get("dropout", 0.0))
    return TextEncoder(vocab_size=config["vocab_size"], width=config.get("text_width", config["dim"]),
                       layers=config["text_layers"], heads=config["heads"], ffn_dim=config["ffn_dim"],
                       max_length=config["max_text_length"], out_dim=config["dim"], dropout=config.get("dropout", 0.0),
                       attention_dropout=config.get("attention_dropout", 0.0))


class DualStreamModel(FusionModel):
    """ViLBERT/ALBEF style: ViT + BERT-style encoders, projections to a shared width, N FusionLayers.

    Fused [CLS] = tanh(Linear([text CLS; image CLS])) after the last fusion layer.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        d = self.dim
        self.image_encoder = image_encoder_from(config)
        self.text_encoder = text_encoder_from(config)
        self.fusion = nn.ModuleList([FusionLayer(d, config["heads"], config["ffn_dim"], config.get("dropout", 0.0),
                                                 config.get("attention_dropout", 0.0))
                                     for _ in range(config["fusion_layers"])])
        self.pool = nn.Sequential(nn.Linear(2 * d, d), nn.Tanh())
        self.heads = build_heads(self.tasks, d, config.get("num_answers", 1), config.get("dropout", 0.0))
        self.init_weights()

    def forward_features(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        image = self.image_encoder(pixel_values)
        text = self.text_encoder(input_ids, attention_mask)
        text_to_image = image_to_text = torch.zeros(())
        for layer in self.fusion:
            text, image, text_to_image, image_to_text = layer(text, image, attention_mask)
        cls = self.pool(torch.cat([text[:, 0], image[:, 0]], dim=-1))
        return {"text_tokens": text, "image_tokens": image, "cls": cls,
                "text_to_image_attention": text_to_image, "image_to_text_attention": image_to_text}


class SingleStreamModel(FusionModel):
    """VisualBERT/UNITER style: [CLS] + image tokens + text tokens, with modality type
    embeddings, through one encoder. Fused [CLS] = the output at position 0."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        d = self.dim
        self.patch_embed = PatchEmbedding(config["image_size"], config["patch_size"], d)
        self.text_embed = TextEmbedding(config["vocab_size"], d, config["max_text_length"], dropout=config.get("dropout", 0.0))
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.modality = nn.Embedding(2, d)  # 0 = image, 1 = text
        self.embed_norm = nn.LayerNorm(d)
        self.layers = nn.ModuleList([EncoderLayer(d, config["heads"], config["ffn_dim"], config.get("dropout", 0.0),
                                                  pre_norm=True, attention_dropout=config.get("attention_dropout", 0.0)) for _ in range(config["layers"])])
        self.norm = nn.LayerNorm(d)
        self.heads = build_heads(self.tasks, d, config.get("num_answers", 1), config.get("dropout", 0.0))
        self.init_weights()
        self.num_patches = self.patch_embed.num_patches

    def forward_features(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        image = self.patch_embed(pixel_values) + self.modality.weight[0]
        text = self.text_embed(input_ids) + self.modality.weight[1]
        cls = self.cls.expand(image.shape[0], -1, -1)
        x = self.embed_norm(torch.cat([cls, image, text], dim=1))
        keep = torch.ones_like(attention_mask[:, :1]).expand(-1, 1 + image.shape[1])
        mask = torch.cat([keep, attention_mask], dim=1)
        for layer in self.layers:
            x, _ = layer(x, mask)
        x = self.norm(x)
        n_image = 1 + image.shape[1]
        return {"text_tokens": x[:, n_image:], "image_tokens": x[:, :n_image], "cls": x[:, 0]}


class GatedFusionModel(FusionModel):
    """Gated fusion: M = alpha * V + (1 - alpha) * T.

    `gate_level: token` (default): each text token first gathers its image context with
    cross-attention (text -> image), the gate mixes that context V_t with the token T_t, and
    the fused vector is the masked mean of M. `gate_level: pooled`: gate the image [CLS]
    against the masked-mean text vector directly.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        d = self.dim
        self.image_encoder = image_encoder_from(config)
        self.text_encoder = text_encoder_from(config)
        self.gate_level = config.get("gate_level", "token")
        if self.gate_level not in ("token", "pooled"):
            from edgefuse.errors import ModelError, suggest

            raise ModelError(f"unknown gate_level '{self.gate_level}'", suggest(self.gate_level, ["token", "pooled"]),
                             code="EF304")
        self.cross = CrossAttention(d, config["heads"], config.get("attention_dropout", 0.0))
        self.cross_norm = nn.LayerNorm(d)
        self.gate = GatedFusion(d)
        self.norm = nn.LayerNorm(d)
        self.heads = build_heads(self.tasks, d, config.get("num_answers", 1), config.get("dropout", 0.0))
        self.init_weights()

    def forward_features(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        image = self.image_encoder(pixel_values)
        text = self.text_encoder(input_ids, attention_mask)
        if self.gate_level == "token":
            context, text_to_image = self.cross(text, image)
            context = self.cross_norm(context)
            fused_tokens, alpha = self.gate(context, text)
            cls = self.norm(masked_mean(fused_tokens, attention_mask))
            return {"text_tokens": text, "image_tokens": image, "cls": cls, "gate": alpha,
                    "fused_tokens": fused_tokens, "text_to_image_attention": text_to_image}
        fused, alpha = self.gate(image[:, 0], masked_mean(text, attention_mask))
        return {"text_tokens": text, "image_tokens": image, "cls": self.norm(fused), "gate": alpha}
