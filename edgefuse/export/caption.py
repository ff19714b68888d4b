"""Captioning export: `image_encoder.onnx` + `decoder.onnx` (one KV-cached step), verified.

Each graph is verified on its own (random shapes, past_length 0 included), then end to end:
ORT generation (edgefuse.export.generation, torch-free) must give the same token ids as
CaptionModel.generate in PyTorch, greedy and beam, on the caller's images (real museum
images when the data package is present).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgefuse.errors import ExportError, VerificationError
from edgefuse.export.families import DECODER_FILE, ENCODER_FILE
from edgefuse.export.generation import CaptionGenerator, GenerationConfig
from edgefuse.export.onnx_export import export_onnx, torch_reference
from edgefuse.export.spec import ExportSpec, caption_decoder_spec, caption_encoder_spec
from edgefuse.export.verify import Case, OutputCheck, make_cases, ort_session, verify_onnx

log = logging.getLogger(__name__)



@dataclass
class CaptionExport:
    """What a caption export produced: specs per file, generation config, measured checks."""

    specs: dict[str, ExportSpec]
    generation: GenerationConfig
    checks: dict[str, list[OutputCheck]] = field(default_factory=dict)
    caption_agreement: dict[str, float] = field(default_factory=dict)


def caption_specs(model: nn.Module) -> tuple[ExportSpec, ExportSpec, GenerationConfig]:
    """Encoder and decoder specs plus generation settings, read from a CaptionModel."""
    cfg = getattr(model, "config", {})
    for attr in ("encode_image", "decode_step", "num_layers", "num_heads", "head_dim", "bos_id", "eos_id", "pad_id", "max_length"):
        if not hasattr(model, attr):
            raise ExportError(f"{type(model).__name__} has no '{attr}'", "captioning export needs a CaptionModel "
                              "(encode_image + KV-cached decode_step)", code="EF420")
    size = int(cfg["image_size"])
    with torch.no_grad():
        tokens = model.encode_image(torch.zeros(1, 3, size, size))
    _, n_tokens, dim = tokens.shape
    enc = caption_encoder_spec(size, int(n_tokens), int(dim))
    dec = caption_decoder_spec(int(cfg["vocab_size"]), model.num_layers, model.num_heads, model.head_dim, int(n_tokens),
                               int(dim), model.max_length)
    gen = GenerationConfig(bos_id=model.bos_id, eos_id=model.eos_id, pad_id=model.pad_id, max_length=model.max_length,
                           num_layers=model.num_layers, num_heads=model.num_heads, head_dim=model.head_dim)
    return enc, dec, gen


def export_caption(model: nn.Module, folder: str | Path, opset: int = 18, verify: bool = True,
                   pixel_values: np.ndarray | None = None, num_beams: int = 3,
                   specs: tuple[ExportSpec, ExportSpec] | None = None) -> CaptionExport:
    """Write image_encoder.onnx + decoder.onnx into `folder` and verify them (fatal on a miss).

    `pixel_values` [N, 3, S, S] are the images captioned end to end (real museum images from
    the caller); without them, random images are used.
    """
    folder = Path(folder)
    model = model.eval()
    enc, dec, gen = caption_specs(model)
    if specs is not None:  # the registry's specs (same shapes; checked against the model's)
        enc, dec = specs
        if enc.outputs[0].shape != caption_specs(model)[0].outputs[0].shape:
            raise ExportError(f"image_tokens shape {enc.outputs[0].shape} in the spec does not match the model",
                              "the zoo config and the weights disagree", code="EF422")
    export_onnx(model, enc, folder / ENCODER_FILE, opset, method="encode_image")
    export_onnx(model, dec, folder / DECODER_FILE, opset, method="decode_step")
    result = CaptionExport(specs={ENCODER_FILE: enc, DECODER_FILE: dec}, generation=gen)
    if not verify:
        return result
    result.checks[ENCODER_FILE] = verify_onnx(torch_reference(model, enc, "encode_image"), folder / ENCODER_FILE, enc, make_cases(enc))
    dec_cases = make_cases(dec)
    if pixel_values is not None:  # a decoder step on real image tokens, past_length > 0
        with torch.no_grad():
            image = model.encode_image(torch.from_numpy(np.ascontiguousarray(pixel_values[:4], dtype=np.float32))).numpy()
        feed = dec.example_inputs({"batch": image.shape[0], "new_length": 1, "past_length": 6}, np.random.default_rng(1))
        feed["image_tokens"] = image
        dec_cases.append(Case(f"museum batch={image.shape[0]}", feed))
    result.checks[DECODER_FILE] = verify_onnx(torch_reference(model, dec, "decode_step"), folder / DECODER_FILE, dec, dec_cases)
    if pixel_values is None:
        pixel_values = enc.example_inputs({"batch": 4}, np.random.default_rng(2))["pixel_values"]
    result.caption_agreement = verify_generation(model, folder, gen, pixel_values, num_beams=num_beams)
    return result


def verify_generation(model: nn.Module, folder: str | Path, gen: GenerationConfig, pixel_values: np.ndarray,
                      num_beams: int = 3, tie_atol: float = 1e-4) -> dict[str, float]:
    """ORT captions must equal PyTorch's greedy captions; fatal otherwise.

    A greedy divergence is forgiven only where PyTorch itself scores the two tokens within
    `tie_atol` (a numerical tie). Beam search (num_beams > 1) amplifies such ties, so its
    agreement is measured and recorded but not fatal.
    """
    folder = Path(folder)
    generator = CaptionGenerator(ort_session(folder / ENCODER_FILE), ort_session(folder / DECODER_FILE), gen)
    pv = np.ascontiguousarray(pixel_values, dtype=np.float32)
    agreement: dict[str, float] = {}
    for beams in sorted({1, num_beams}):
        label = "greedy" if beams == 1 else f"beam{beams}"
        with torch.inference_mode():
            ref = model.generate(torch.from_numpy(pv), num_beams=beams).numpy()
        got = generator.generate(pv, num_beams=beams)
        same = [_same_prefix(r, g, gen) for r, g in zip(ref, got, strict=True)]
        agreement[label] = float(np.mean(same))
        log.info("caption agreement %s: %.3f on %d images", label, agreement[label], len(same))
        if all(same) or beams > 1:
            continue
        for i, ok in enumerate(same):
            if not ok and not _greedy_tie(model, pv[i:i + 1], ref[i], got[i], tie_atol):
                raise VerificationError(f"output 'caption' ({label}) differs from PyTorch on image {i} of {len(same)} "
                                        f"(pixel_values{list(pv.shape)}): ORT {got[i].tolist()} vs PyTorch {ref[i].tolist()}",
                                        "nothing was written; the decoder graph does not match decode_step", code="EF415")
        log.info("greedy captions differ only at numerical ties (< %g)", tie_atol)
    return agreement


def _greedy_tie(model: nn.Module, pixel_values: np.ndarray, ref: np.ndarray, got: np.ndarray, atol: float) -> bool:
    """Whether PyTorch scores its token and ORT's within `atol` at the first step they differ."""
    n = min(len(ref), len(got))
    diff = np.nonzero(ref[:n] != got[:n])[0]
    if len(diff) == 0:
        return True
    d = int(diff[0])
    with torch.inference_mode():
        image = model.encode_image(torch.from_numpy(pixel_values))
        pk, pv = model.empty_cache(1, image)
        logits, _, _ = model.decode_step(torch.from_numpy(ref[None, :d].astype(np.int64)), image, pk, pv)
    last = logits[0, -1].float().numpy()
    return bool(abs(float(last[int(ref[d])]) - float(last[int(got[d])])) <= atol)


def _same_prefix(a: np.ndarray, b: np.ndarray, gen: GenerationConfig) -> bool:
    """Same caption when one side stopped earlier (batch-level early stop pads differently)."""
    n = min(len(a), len(b))
    if not np.array_equal(a[:n], b[:n]):
        return False
    rest = np.concatenate([a[n:], b[n:]])
    return bool(np.all(rest == gen.pad_id))


def caption_manifest_fields(result: CaptionExport) -> dict[str, Any]:
    """Manifest entries for a caption artifact: per-file specs and the generation settings."""
    return {
        "components": {name: {"inputs": [t.to_dict() for t in s.inputs], "outputs": [t.to_dict() for t in s.outputs]}
                       for name, s in result.specs.items()},
        "generation": result.generation.to_dict(),
    }
