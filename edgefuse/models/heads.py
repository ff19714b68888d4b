"""Task heads. Each reads the model's feature dict and returns its named outputs.

Features every fusion model provides (see `forward_features`): `cls` [B, D] (fused [CLS]),
`text_tokens` [B, L, D], `image_tokens` [B, 1 + P, D] (token 0 = image [CLS]); dual-stream
models add `text_to_image_attention` [B, H, L, 1 + P] from the last fusion layer.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Output names per task, in the order a model returns them (docs/interfaces.md).
TASK_OUTPUTS: dict[str, tuple[str, ...]] = {
    "vqa": ("vqa_logits",),
    "itm": ("itm_logits",),
    "grounding": ("box", "grounding_attention"),
    "captioning": ("caption_logits",),
}


class VQAHead(nn.Module):
    """Answer classification over the answer vocabulary: MLP on the fused [CLS]."""

    def __init__(self, dim: int, num_answers: int, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = hidden or 2 * dim
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Dropout(dropout),
                                 nn.Linear(hidden, num_answers))

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"vqa_logits": self.mlp(features["cls"])}


class ITMHead(nn.Module):
    """Image-text matching: 2 logits from the fused [CLS] (index 1 = match)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 2)

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"itm_logits": self.fc(features["cls"])}


def patch_attention(text_to_image: Tensor) -> Tensor:
    """Text [CLS] -> image patch attention [B, P]: averaged over heads, image [CLS] dropped, sums to 1."""
    a = text_to_image[:, :, 0, 1:].mean(dim=1)
    return a / a.sum(dim=-1, keepdim=True).clamp(min=1e-12)


class GroundingHead(nn.Module):
    """Box (x, y, w, h) in [0, 1] (top-left origin, sigmoid) plus the phrase-to-patch attention map.

    The box MLP reads the fused [CLS] and the attention-weighted image patches, so the box
    follows where the phrase looks.
    """

    def __init__(self, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or dim
        self.mlp = nn.Sequential(nn.Linear(2 * dim, hidden), nn.GELU(), nn.Linear(hidden, 4))

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        attention = patch_attention(features["text_to_image_attention"])
        patches = features["image_tokens"][:, 1:]
        attended = torch.matmul(attention[:, None, :], patches)[:, 0]
        box = torch.sigmoid(self.mlp(torch.cat([features["cls"], attended], dim=-1)))
        return {"box": box, "grounding_attention": attention}


def build_heads(tasks: list[str], dim: int, num_answers: int, dropout: float = 0.0) -> nn.ModuleDict:
    """One head per task, in task order (captioning has its own decoder, not a head here)."""
    heads = nn.ModuleDict()
    for task in tasks:
        if task == "vqa":
            heads[task] = VQAHead(dim, num_answers, dropout=dropout)
        elif task == "itm":
            heads[task] = ITMHead(dim)
        elif task == "grounding":
            heads[task] = GroundingHead(dim)
        else:
            from edgefuse.errors import ModelError, suggest

            raise ModelError(f"unknown task '{task}' for a fusion model", suggest(task, ["vqa", "itm", "grounding"]),
                             code="EF303")
    return heads


def run_heads(heads: nn.ModuleDict, features: dict[str, Tensor]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for head in heads.values():
        out.update(head(features))
    return out
