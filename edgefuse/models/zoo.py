"""The model zoo: name -> ZooEntry (family, tasks, plain-JSON config, builder).

Data-driven on purpose: an entry's config fully describes the architecture, its input and
output specs (named dynamic axes) derive from it, and the shipped weights folder may carry
a config.json whose architecture keys override the defaults (so weights trained at another
size still load). Weights are safetensors only; pickled checkpoints are refused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgefuse.errors import ModelError, WeightsError, suggest

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

WEIGHTS_ROOT = Path(__file__).resolve().parent / "weights"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
DEFAULT_MODEL = "museum-dual"
INPUT_NAMES = ("pixel_values", "input_ids", "attention_mask")

_COMMON: dict[str, Any] = {
    "image_size": 64, "patch_size": 8, "dim": 128, "heads": 4, "ffn_dim": 256, "image_layers": 2,
    "max_text_length": 32, "dropout": 0.1, "attention_dropout": 0.0, "vocab_size": None,
}

_REGISTRY: dict[str, dict[str, Any]] = {
    "museum-dual": {
        "family": "dual-stream", "tasks": ("vqa", "itm", "grounding"),
        "builder": "edgefuse.models.fusion:DualStreamModel",
        "description": "ViT + BERT-style towers, 2 bidirectional co-attention fusion layers (ViLBERT/ALBEF style)",
        "config": {**_COMMON, "text_layers": 2, "fusion_layers": 2, "num_answers": None, "text_tower": None},
    },
    "museum-single": {
        "family": "single-stream", "tasks": ("vqa",),
        "builder": "edgefuse.models.fusion:SingleStreamModel",
        "description": "[CLS] + image + text tokens with modality embeddings through one encoder (VisualBERT/UNITER style)",
        "config": {**_COMMON, "layers": 4, "num_answers": None},
    },
    "museum-gated": {
        "family": "gated", "tasks": ("vqa",),
        "builder": "edgefuse.models.fusion:GatedFusionModel",
        "description": "ViT + BERT-style towers, token-level gate alpha*V + (1-alpha)*T over text->image context",
        "config": {**_COMMON, "text_layers": 2, "gate_level": "token", "num_answers": None, "text_tower": None},
    },
    "museum-caption": {
        "family": "caption", "tasks": ("captioning",),
        "builder": "edgefuse.models.caption:CaptionModel",
        "description": "ViT encoder + 2-layer transformer decoder with cross-attention and a KV cache",
        "config": {**_COMMON, "decoder_layers": 2, "pad_id": None, "bos_id": None, "eos_id": None},
    },
}


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: enough to build it, load its weights and derive its export specs."""

    name: str
    family: str
    tasks: tuple[str, ...]
    config: dict[str, Any] = field(hash=False)
    builder: str  # "module:Class", imported on build so listing the zoo needs no torch
    description: str = ""

    @property
    def weights_dir(self) -> Path:
        return weights_dir(self.name)

    @property
    def weights_file(self) -> Path:
        return self.weights_dir / WEIGHTS_FILE

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    @property
    def max_text_length(self) -> int:
        return int(self.config["max_text_length"])

    @property
    def num_patches(self) -> int:
        return (self.image_size // int(self.config["patch_size"])) ** 2

    def build(self, seed: int = 0) -> nn.Module:
        """Random-init model (seeded without touching the global RNG), in eval mode."""
        import importlib

        import torch

        module, _, cls = self.builder.partition(":")
        factory = getattr(importlib.import_module(module), cls)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = factory(dict(self.config, tasks=list(self.tasks)))
        return model.eval()

    def graph_specs(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """Inputs/outputs per exported graph: {graph: {"inputs": [...], "outputs": [...]}}.

        Each spec is {"name", "dtype", "shape"} with named dynamic axes as strings
        ("batch", "text_length", "past_length", "new_length"), like the artifact manifest.
        """
        c = self.config
        s = self.image_size
        pixels = {"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, s, s]}
        if self.family == "caption":
            n_img = self.num_patches + 1
            hd = c["dim"] // c["heads"]
            cache = [c["decoder_layers"], "batch", c["heads"], "past_length", hd]
            present = [c["decoder_layers"], "batch", c["heads"], "past_length + new_length", hd]
            return {
                "image_encoder": {"inputs": [pixels],
                                  "outputs": [{"name": "image_tokens", "dtype": "float32", "shape": ["batch", n_img, c["dim"]]}]},
                "decoder": {
                    "inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "new_length"]},
                               {"name": "image_tokens", "dtype": "float32", "shape": ["batch", n_img, c["dim"]]},
                               {"name": "past_keys", "dtype": "float32", "shape": cache},
                               {"name": "past_values", "dtype": "float32", "shape": cache}],
                    "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", "new_length", c["vocab_size"]]},
                                {"name": "present_keys", "dtype": "float32", "shape": present},
                                {"name": "present_values", "dtype": "float32", "shape": present}],
                },
            }
        shapes = {"vqa_logits": ["batch", c.get("num_answers")], "itm_logits": ["batch", 2], "box": ["batch", 4],
                  "grounding_attention": ["batch", self.num_patches]}
        return {"model": {
            "inputs": [pixels, {"name": "input_ids", "dtype": "int64", "shape": ["batch", "text_length"]},
                       {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "text_length"]}],
            "outputs": [{"name": n, "dtype": "float32", "shape": shapes[n]} for n in self.output_names],
        }}

    @property
    def output_names(self) -> tuple[str, ...]:
        from edgefuse.models.heads import TASK_OUTPUTS

        return tuple(n for t in self.tasks for n in TASK_OUTPUTS[t])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "tasks": list(self.tasks), "builder": self.builder,
                "description": self.description, "config": dict(self.config)}


def list_models() -> list[str]:
    return list(_REGISTRY)


def weights_dir(name: str) -> Path:
    """Where shipped weights for `name` live: edgefuse/models/weights/<name>/."""
    return WEIGHTS_ROOT / name


def _data_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """Fill vocabulary-dependent keys from the shared tokenizer and answer vocabulary."""
    filled = dict(config)
    need_tok = [k for k in ("vocab_size", "pad_id", "bos_id", "eos_id") if k in filled and filled[k] is None]
    if need_tok:
        from edgefuse.data.tokenizer import default_tokenizer

        tok = default_tokenizer()
        values = {"vocab_size": tok.vocab_size, "pad_id": tok.pad_id, "bos_id": tok.cls_id, "eos_id": tok.sep_id}
        filled.update({k: values[k] for k in need_tok})
    if "num_answers" in filled and filled["num_answers"] is None:
        from edgefuse.data.museum import answer_vocabulary

        filled["num_answers"] = len(answer_vocabulary())
    return filled


def _check_overrides(name: str, base: dict[str, Any], overrides: dict[str, Any], source: str) -> None:
    for key in overrides:
        if key not in base:
            raise ModelError(f"{source}: unknown config key '{key}' for {name}", suggest(key, base), code="EF305")


def read_config_file(path: Path) -> dict[str, Any]:
    """A config.json beside weights: either the bare config or {"config": {...}} (ZooEntry.to_dict)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"cannot read {path}: {e}", "re-write it (it should be JSON)", code="EF317") from e
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    if not isinstance(data, dict):
        raise WeightsError(f"{path} is not a JSON object", "write the model config as a JSON object", code="EF317")
    return data


def get_entry(name: str, config_file: str | Path | None = None, **overrides: Any) -> ZooEntry:
    """The zoo entry for `name`, with its config resolved.

    Order: defaults, then the architecture keys of the shipped config.json (or
    `config_file`), then keyword overrides (e.g. text_tower="minilm"); vocabulary sizes are
    filled from the shared tokenizer / answer vocabulary, or from a pretrained text tower.
    """
    if name not in _REGISTRY:
        raise ModelError(f"unknown model '{name}'", suggest(name, _REGISTRY), code="EF306")
    spec = _REGISTRY[name]
    config = dict(spec["config"])
    path = Path(config_file) if config_file is not None else weights_dir(name) / CONFIG_FILE
    if path.exists():
        stored = {k: v for k, v in read_config_file(path).items() if k in config}
        config.update(stored)
    _check_overrides(name, config, overrides, "override")
    config.update(overrides)
    if config.get("text_tower"):
        from edgefuse.models.hf import tower_config

        tower = tower_config(config["text_tower"])
        config["vocab_size"] = tower["vocab_size"]
        config["tokenizer"] = tower["tokenizer"]
        if config["max_text_length"] > 512:
            config["max_text_length"] = 512
    config = _data_defaults(config)
    return ZooEntry(name=name, family=spec["family"], tasks=tuple(spec["tasks"]), config=config, builder=spec["builder"],
                    description=spec["description"])


def build_model(name: str, seed: int = 0, **overrides: Any) -> nn.Module:
    """Random-init (seeded) zoo model in eval mode."""
    return get_entry(name, **overrides).build(seed)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- weights ----------------------------------------------------------------------------------
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


def _check_safetensors_file(path: Path) -> None:
    """Refuse anything that is not a safetensors file before reading tensors."""
    if not path.exists():
        raise WeightsError(f"weights file {path} not found",
                           "train it with `edgefuse train`, pass a .safetensors file, or use pretrained=False", code="EF311")
    if not path.is_file():
        raise WeightsError(f"weights path {path} is not a file", "pass the model.safetensors file itself", code="EF311")
    with open(path, "rb") as f:
        head = f.read(9)
    looks_pickle = head[:4] == b"PK\x03\x04" or head[:1] == b"\x80"
    if path.suffix.lower() in _PICKLE_SUFFIXES or looks_pickle:
        raise WeightsError(f"{path} is not a safetensors file (pickled checkpoints can run code when loaded)",
                           "convert it: safetensors.torch.save_file(torch.load(p, weights_only=True), 'model.safetensors')",
                           code="EF312")
    if len(head) < 9 or int.from_bytes(head[:8], "little") <= 0 or head[8:9] != b"{":
        raise WeightsError(f"{path} is not a valid safetensors file (bad header)", "the file is corrupt or of another format",
                           code="EF313")


def read_weights(path: str | Path) -> dict[str, Any]:
    """Tensors of a safetensors file; typed errors for missing, pickled or corrupt files."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    _check_safetensors_file(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WeightsError(f"{path} is corrupt: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                           "re-train or re-copy the weights file", code="EF313") from e


def load_state(model: nn.Module, state: dict[str, Any], source: str | Path) -> None:
    """Strict load that names the first missing, unexpected or mis-shaped tensor."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise WeightsError(f"{source}: tensor '{missing[0]}' is missing ({len(missing)} missing)",
                           "the weights belong to another model or config", code="EF314")
    extra = [k for k in state if k not in own]
    if extra:
        raise WeightsError(f"{source}: unexpected tensor '{extra[0]}' ({len(extra)} unexpected)",
                           "the weights belong to another model or config", code="EF315")
    for k, t in state.items():
        if tuple(t.shape) != tuple(own[k].shape):
            raise WeightsError(f"{source}: tensor '{k}' has shape {tuple(t.shape)}, the model expects {tuple(own[k].shape)}",
                               "the weights were trained with another config; ship its config.json beside them", code="EF316")
    model.load_state_dict(state, strict=True)


def load_model(name: str, weights: str | Path | None = None, pretrained: bool = True, **overrides: Any) -> nn.Module:
    """Zoo model in eval mode with weights: `weights` (a .safetensors file), else the shipped
    ones when `pretrained`, else random init. A config.json beside a given weights file
    overrides the architecture keys (so its shapes match)."""
    config_file = None
    if weights is not None:
        side = Path(weights).parent / CONFIG_FILE
        config_file = side if side.exists() else None
    entry = get_entry(name, config_file=config_file, **overrides)
    if weights is None and not pretrained:
        return entry.build()
    path = Path(weights) if weights is not None else entry.weights_file
    state = read_weights(path)
    model = entry.build()
    load_state(model, state, path)
    log.info("loaded %s weights from %s", name, path)
    return model.eval()


def weights_status(name: str) -> str:
    """"shipped" / "missing" / "invalid (...)" for the zoo listing."""
    path = weights_file(name)
    if not path.exists():
        return "missing"
    try:
        _check_safetensors_file(path)
    except WeightsError as e:
        return f"invalid ({e.code})"
    return "shipped"


def weights_file(name: str) -> Path:
    return weights_dir(name) / WEIGHTS_FILE


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write the model's state dict as safetensors, atomically (temp file + fsync + rename)."""
    from safetensors.torch import save

    from edgefuse.artifacts import atomic_write_bytes

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "pt"}
    cfg = getattr(model, "config", None)
    if isinstance(cfg, dict):
        meta["config"] = json.dumps(cfg, sort_keys=True, default=str)
    meta.update(metadata or {})
    return atomic_write_bytes(path, save(state, metadata=meta))


def with_config(entry: ZooEntry, **changes: Any) -> ZooEntry:
    """A copy of `entry` with config keys changed (for experiments; keys must exist)."""
    _check_overrides(entry.name, entry.config, changes, "with_config")
    return replace(entry, config={**entry.config, **changes})
