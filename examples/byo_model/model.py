"""A fusion model written outside edgefuse: the article's `MultimodalTransformer`.

Its own encoders (a patch CNN + transformer for images, an embedding + transformer for
text), projections to a shared width and bidirectional cross-attention fusion layers, all
in plain torch.nn (nn.MultiheadAttention, nn.TransformerEncoderLayer). Nothing here imports
edgefuse except the factory at the bottom, which hands the model and its ExportSpec to

    edgefuse export examples.byo_model.model:build --out artifacts/byo-fp32

The factory takes no arguments and returns (model, spec) or (model, spec, assets).
"""

from __future__ import annotations

import torch
from torch import nn


class ImageEncoder(nn.Module):
    """Patchify with a strided conv, add learned positions, run a small transformer."""

    def __init__(self, image_size: int = 64, patch: int = 8, dim: int = 96, layers: int = 1, heads: int = 4) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, (image_size // patch) ** 2, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch(images).flatten(2).transpose(1, 2) + self.pos
        return self.encoder(x)


class TextEncoder(nn.Module):
    """Token + position embeddings and a small transformer that ignores padding."""

    def __init__(self, vocab_size: int, max_length: int = 32, dim: int = 64, layers: int = 1, heads: int = 4) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab_size, dim)
        self.pos = nn.Embedding(max_length, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, text_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(text_ids.shape[1], device=text_ids.device)  # from the shape: no baked length
        x = self.tok(text_ids) + self.pos(positions)[None]
        return self.encoder(x, src_key_padding_mask=attention_mask == 0)


class FusionLayer(nn.Module):
    """Image attends to text and text attends to image, then residual + LayerNorm and an FFN."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.img_to_txt = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.txt_to_img = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_img = nn.LayerNorm(dim)
        self.norm_txt = nn.LayerNorm(dim)
        self.ffn_img = nn.Sequential(nn.Linear(dim, dim * 2), nn.GELU(), nn.Linear(dim * 2, dim))
        self.ffn_txt = nn.Sequential(nn.Linear(dim, dim * 2), nn.GELU(), nn.Linear(dim * 2, dim))
        self.norm_img2 = nn.LayerNorm(dim)
        self.norm_txt2 = nn.LayerNorm(dim)

    def forward(self, img: torch.Tensor, txt: torch.Tensor, text_padding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, _ = self.img_to_txt(img, txt, txt, key_padding_mask=text_padding, need_weights=False)
        b, _ = self.txt_to_img(txt, img, img, need_weights=False)
        img = self.norm_img(img + a)
        txt = self.norm_txt(txt + b)
        return self.norm_img2(img + self.ffn_img(img)), self.norm_txt2(txt + self.ffn_txt(txt))


class MultimodalTransformer(nn.Module):
    """The article's model: separate encoders, projection to a shared width, N fusion layers, a classifier."""

    def __init__(self, vocab_size: int, num_classes: int, image_size: int = 64, max_length: int = 32,
                 fusion_dim: int = 64, num_heads: int = 4, num_layers: int = 2) -> None:
        super().__init__()
        self.image_encoder = ImageEncoder(image_size)
        self.text_encoder = TextEncoder(vocab_size, max_length)
        self.image_proj = nn.Linear(96, fusion_dim)
        self.text_proj = nn.Linear(64, fusion_dim)
        self.fusion_layers = nn.ModuleList([FusionLayer(fusion_dim, num_heads) for _ in range(num_layers)])
        self.classifier = nn.Sequential(nn.Linear(fusion_dim * 2, fusion_dim), nn.GELU(), nn.Linear(fusion_dim, num_classes))

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        padding = attention_mask == 0
        img = self.image_proj(self.image_encoder(pixel_values))
        txt = self.text_proj(self.text_encoder(input_ids, attention_mask))
        for layer in self.fusion_layers:
            img, txt = layer(img, txt, padding)
        keep = attention_mask.unsqueeze(-1).to(txt.dtype)
        text_pooled = (txt * keep).sum(1) / keep.sum(1).clamp(min=1.0)  # masked mean: padding never counts
        pooled = torch.cat([img.mean(1), text_pooled], dim=-1)
        return {"vqa_logits": self.classifier(pooled)}


def build():
    """Factory for `edgefuse export examples.byo_model.model:build`: (model, ExportSpec, assets).

    Uses edgefuse's museum tokenizer and answer vocabulary so the artifact also runs in the
    kiosk; load your trained weights here (model.load_state_dict(...)) before returning.
    """
    from edgefuse.data.museum import answer_vocabulary
    from edgefuse.data.tokenizer import default_tokenizer
    from edgefuse.export.spec import TensorSpec, image_text_spec

    tokenizer = default_tokenizer()
    answers = answer_vocabulary()
    torch.manual_seed(0)
    model = MultimodalTransformer(tokenizer.vocab_size, len(answers)).eval()
    spec = image_text_spec(
        family="byo-multimodal-transformer", image_size=64, vocab_size=tokenizer.vocab_size, max_text_length=32,
        outputs=[TensorSpec("vqa_logits", "float32", ("batch", len(answers)))], tasks=["vqa"],
        cls_id=tokenizer.cls_id, pad_id=tokenizer.pad_id, first_word_id=max(tokenizer.special_ids) + 1,
    )
    return model, spec, {"tokenizer.json": tokenizer, "answers.json": answers}
