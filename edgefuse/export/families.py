"""Registry: zoo family -> the ExportSpecs of its graphs (file name -> spec).

Every family the zoo knows has an entry here, and tests/test_export.py parametrises over
this registry and fails if a registered family has no export test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgefuse.errors import ExportError, suggest
from edgefuse.export.spec import ExportSpec, TensorSpec, caption_decoder_spec, caption_encoder_spec, image_text_spec

MODEL_FILE = "model.onnx"
ENCODER_FILE = "image_encoder.onnx"
DECODER_FILE = "decoder.onnx"

SpecBuilder = Callable[[Any], dict[str, ExportSpec]]  # ZooEntry -> {file name: spec}
FAMILY_SPECS: dict[str, SpecBuilder] = {}


def register_family(name: str) -> Callable[[SpecBuilder], SpecBuilder]:
    """Decorator: register the spec builder of one zoo family."""

    def deco(fn: SpecBuilder) -> SpecBuilder:
        FAMILY_SPECS[name] = fn
        return fn

    return deco


def registered_families() -> list[str]:
    return sorted(FAMILY_SPECS)


def specs_for(entry: Any) -> dict[str, ExportSpec]:
    """{file name: ExportSpec} for a ZooEntry; unknown families get a near-miss hint."""
    builder = FAMILY_SPECS.get(entry.family)
    if builder is None:
        raise ExportError(f"no export spec for family '{entry.family}' ({entry.name})",
                          f"{suggest(entry.family, FAMILY_SPECS)}; or export it as package.module:factory", code="EF402")
    return builder(entry)


def _token_ids(config: dict[str, Any]) -> dict[str, int]:
    """[CLS]/[PAD] ids and the first ordinary word id of the model's tokenizer."""
    from edgefuse.data.tokenizer import Tokenizer, default_tokenizer

    tok_path = config.get("tokenizer")
    tok = Tokenizer.load(tok_path) if tok_path else default_tokenizer()
    first = max(tok.special_ids) + 1 if max(tok.special_ids) + 1 < tok.vocab_size else 0
    return {"cls_id": tok.cls_id, "pad_id": tok.pad_id, "first_word_id": first}


def _image_text(entry: Any) -> dict[str, ExportSpec]:
    graph = entry.graph_specs()["model"]
    outputs = [TensorSpec(o["name"], o["dtype"], tuple(o["shape"])) for o in graph["outputs"]]
    spec = image_text_spec(entry.family, entry.image_size, int(entry.config["vocab_size"]), entry.max_text_length,
                           outputs, tasks=list(entry.tasks), **_token_ids(entry.config))
    return {MODEL_FILE: spec}


for _family in ("dual-stream", "single-stream", "gated"):
    register_family(_family)(_image_text)


@register_family("caption")
def _caption(entry: Any) -> dict[str, ExportSpec]:
    c = entry.config
    n_tokens, dim = entry.num_patches + 1, int(c["dim"])
    heads = int(c["heads"])
    return {
        ENCODER_FILE: caption_encoder_spec(entry.image_size, n_tokens, dim),
        DECODER_FILE: caption_decoder_spec(int(c["vocab_size"]), int(c["decoder_layers"]), heads, dim // heads, n_tokens, dim,
                                           entry.max_text_length, first_word_id=_token_ids(c)["first_word_id"]),
    }
