"""`export_model`: zoo name / factory / Hugging Face folder -> a verified FP32 ONNX artifact folder.

The folder (docs/interfaces.md, "Artifact folders") holds model.onnx (or image_encoder.onnx +
decoder.onnx), manifest.json, tokenizer.json and answers.json, so the torch-free runtime
needs nothing else. It is built under a hidden temp name and renamed into place only after
verification passed (edgefuse.artifacts.staged_dir): a failed or interrupted export leaves
nothing that looks finished.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefuse.artifacts import MANIFEST_NAME, atomic_write_json, sha256_bytes, sha256_file, staged_dir, tool_versions, write_manifest
from edgefuse.errors import ExportError
from edgefuse.export.families import DECODER_FILE, ENCODER_FILE, MODEL_FILE, specs_for
from edgefuse.export.spec import ExportSpec
from edgefuse.export.verify import Case, OutputCheck, make_cases, summarize, verify_onnx

log = logging.getLogger(__name__)

DEFAULT_OUTPUT_DIR = "artifacts"
TOOLS = ("torch", "onnx", "onnxruntime", "onnxscript", "numpy", "tokenizers", "optimum", "transformers")


@dataclass
class ExportResult:
    """A published artifact: where it is, its manifest and the measured verification."""

    folder: Path
    manifest: dict[str, Any]
    checks: list[OutputCheck] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def files(self) -> list[str]:
        return sorted(self.manifest.get("files", {}))


@dataclass
class Source:
    """A model resolved for export: the module, its graphs' specs and what goes beside them."""

    name: str
    family: str
    tasks: list[str]
    module: Any
    specs: dict[str, ExportSpec]
    weights_sha256: str
    weights_source: str
    tokenizer: Any = None  # edgefuse Tokenizer (or None)
    answers: list[str] | None = None
    extra_files: dict[str, bytes] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def default_output(name: str, output_dir: str | Path = DEFAULT_OUTPUT_DIR) -> Path:
    safe = name.replace(":", "-").replace("/", "-").replace(".", "-") if ":" in name else Path(name).name
    return Path(output_dir) / f"{safe}-fp32"


def state_sha256(module: Any) -> str:
    """sha256 of the module's weights as safetensors bytes (for weights with no file)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    return sha256_bytes(save(state))


def resolve_zoo(name: str, weights: str | Path | None = None, pretrained: bool | None = None) -> Source:
    """A zoo model with its weights: `weights`, else the shipped ones, else random init (logged)."""
    from edgefuse.data.tokenizer import Tokenizer, default_tokenizer
    from edgefuse.models import zoo

    entry = zoo.get_entry(name)
    if weights is not None:
        module = zoo.load_model(name, weights=weights)
        w_sha, w_src = sha256_file(weights), str(weights)
        folder = Path(weights).parent
    elif pretrained is not False and entry.weights_file.exists():
        module = zoo.load_model(name)
        w_sha, w_src = sha256_file(entry.weights_file), f"shipped:{entry.weights_file.name}"
        folder = entry.weights_dir
    elif pretrained is True:
        raise ExportError(f"no shipped weights for {name} at {entry.weights_file}",
                          f"train them with `edgefuse train {name}` or pass --weights FILE", code="EF421")
    else:
        log.info("no shipped weights for %s: exporting a random-init model (seed 0)", name)
        module = zoo.load_model(name, pretrained=False)
        w_sha, w_src = state_sha256(module), "random-init:seed0"
        folder = None
    if weights is not None:  # a config.json beside the weights may change the architecture
        entry = zoo.get_entry(name, config_file=folder / zoo.CONFIG_FILE if (folder / zoo.CONFIG_FILE).exists() else None)
    tok_file = folder / "tokenizer.json" if folder is not None else None
    if tok_file is not None and tok_file.exists():
        tokenizer = Tokenizer.load(tok_file)
    elif entry.config.get("tokenizer"):
        tokenizer = Tokenizer.load(entry.config["tokenizer"])
    else:
        tokenizer = default_tokenizer()
    answers = None
    if "vqa" in entry.tasks:
        ans_file = folder / "answers.json" if folder is not None else None
        if ans_file is not None and ans_file.exists():
            answers = [str(a) for a in json.loads(ans_file.read_text())]
        else:
            from edgefuse.data.museum import answer_vocabulary

            answers = answer_vocabulary()
    return Source(name=name, family=entry.family, tasks=list(entry.tasks), module=module, specs=specs_for(entry),
                  weights_sha256=w_sha, weights_source=w_src, tokenizer=tokenizer, answers=answers, config=dict(entry.config))


def resolve_factory(ref: str) -> Source:
    """A bring-your-own model from `package.module:factory`."""
    from edgefuse.data.tokenizer import Tokenizer
    from edgefuse.export.byo import load_factory

    res = load_factory(ref)
    tokenizer = None
    answers = None
    extra: dict[str, bytes] = {}
    for name, value in res.assets.items():
        if name == "tokenizer.json":
            tokenizer = value if hasattr(value, "to_json") else Tokenizer.load(value)
        elif name == "answers.json":
            answers = [str(a) for a in (json.loads(Path(value).read_text()) if isinstance(value, (str, Path)) else value)]
        elif isinstance(value, bytes):
            extra[name] = value
        else:
            extra[name] = Path(value).read_bytes()
    return Source(name=ref, family=res.spec.family, tasks=list(res.spec.tasks), module=res.module,
                  specs={MODEL_FILE: res.spec}, weights_sha256=state_sha256(res.module), weights_source=f"factory:{ref}",
                  tokenizer=tokenizer, answers=answers, extra_files=extra)


def museum_cases(spec: ExportSpec, tokenizer: Any, n: int = 8) -> list[Case]:
    """Real museum images with questions, captions and phrases (padded to the longest, and to max length)."""
    if tokenizer is None or spec.image_size is None or spec.input_names != ["pixel_values", "input_ids", "attention_mask"]:
        return []
    from edgefuse.data.museum import generate
    from edgefuse.data.preprocess import preprocess_images

    items = generate("val", n=n)
    texts = []
    for i, it in enumerate(items):
        pool = [[q.question for q in it.questions], it.captions, [r.phrase for r in it.refs], it.negative_captions]
        texts.append(next((p[0] for p in pool[i % 4:] + pool[: i % 4] if p), "what colour is the vase?"))
    pixels = preprocess_images([it.image for it in items], spec.image_size)
    max_len = spec.max_text_length or 32
    cases = []
    ids, mask = tokenizer.encode_batch(texts, max_length=max_len)
    cases.append(Case(f"museum batch={n} text_length={ids.shape[1]}", {"pixel_values": pixels, "input_ids": ids, "attention_mask": mask}))
    ids, mask = tokenizer.encode_batch(texts[:3], max_length=max_len, pad_to=max_len)
    cases.append(Case(f"museum batch=3 text_length={max_len} (padded)", {"pixel_values": pixels[:3], "input_ids": ids, "attention_mask": mask}))
    return cases


def museum_pixels(image_size: int, n: int = 6) -> np.ndarray:
    from edgefuse.data.museum import generate
    from edgefuse.data.preprocess import preprocess_images

    return preprocess_images([it.image for it in generate("val", n=n)], image_size)


def export_model(model: str = "museum-dual", out: str | Path | None = None, *, opset: int = 18, overwrite: bool = False,
                 weights: str | Path | None = None, pretrained: bool | None = None, verify: bool = True,
                 created_by: str | None = None, output_dir: str | Path = DEFAULT_OUTPUT_DIR) -> ExportResult:
    """Export `model` (zoo name, package.module:factory, or a Hugging Face folder) to a verified artifact.

    Verification (ONNX Runtime vs PyTorch at non-trace shapes and on museum data) is fatal:
    a miss raises VerificationError and nothing is published.
    """
    import torch

    from edgefuse.export import byo, optimum_route

    t0 = time.perf_counter()
    if optimum_route.is_hf_ref(model):
        return optimum_route.export_hf(model, out, opset=opset, overwrite=overwrite, verify=verify, created_by=created_by,
                                       output_dir=output_dir)
    out = Path(out) if out is not None else default_output(model, output_dir)
    check_output(out, overwrite)
    if byo.is_factory_ref(model):
        if weights is not None:
            raise ExportError("--weights applies to zoo models", "load weights inside your factory", code="EF435")
        src = resolve_factory(model)
    else:
        src = resolve_zoo(model, weights, pretrained)
    threads = torch.get_num_threads()
    checks: list[OutputCheck] = []
    extra_manifest: dict[str, Any] = {}
    with staged_dir(out, overwrite=overwrite) as tmp:
        if src.family == "caption":
            from edgefuse.export.caption import caption_manifest_fields, export_caption

            cap = export_caption(src.module, tmp, opset=opset, verify=verify,
                                 pixel_values=museum_pixels(src.specs[ENCODER_FILE].image_size or 64) if verify else None,
                                 specs=(src.specs[ENCODER_FILE], src.specs[DECODER_FILE]))
            for cs in cap.checks.values():
                checks.extend(cs)
            extra_manifest.update(caption_manifest_fields(cap))
            if verify:
                extra_manifest["verification"] = {name: summarize(cs) for name, cs in cap.checks.items()}
                extra_manifest["verification"]["captions"] = {"agreement": cap.caption_agreement, "images": "museum val"}
            main_spec = src.specs[ENCODER_FILE]
        else:
            from edgefuse.export.onnx_export import export_onnx, torch_reference

            main_spec = src.specs[MODEL_FILE]
            export_onnx(src.module, main_spec, tmp / MODEL_FILE, opset)
            if verify:
                cases = make_cases(main_spec) + museum_cases(main_spec, src.tokenizer)
                checks = verify_onnx(torch_reference(src.module, main_spec), tmp / MODEL_FILE, main_spec, cases, threads=min(threads, 2))
                extra_manifest["verification"] = {MODEL_FILE: summarize(checks)}
        if src.tokenizer is not None:
            src.tokenizer.save(tmp / "tokenizer.json")
        if src.answers is not None:
            atomic_write_json(tmp / "answers.json", src.answers)
        for name, data in src.extra_files.items():
            (tmp / name).write_bytes(data)
        manifest = build_manifest(src, tmp, main_spec, opset, created_by, extra_manifest, time.perf_counter() - t0)
        write_manifest(tmp, manifest)
    seconds = time.perf_counter() - t0
    log.info("exported %s to %s in %.1f s", model, out, seconds)
    return ExportResult(out, manifest, checks, seconds)


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an existing or unwritable output before spending time on the export."""
    import tempfile

    from edgefuse.errors import ArtifactError

    if out.exists() and not overwrite:
        raise ArtifactError(f"output {out} already exists", "pass --overwrite to replace it", code="EF601")
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"output {out} is a file", "choose a folder path", code="EF602")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".probe"):
            pass
    except OSError as e:
        raise ArtifactError(f"cannot write to {out.parent}: {e.strerror or e}", "choose a writable folder", code="EF602") from e


def build_manifest(src: Source, folder: Path, spec: ExportSpec, opset: int, created_by: str | None,
                   extra: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The artifact manifest (docs/interfaces.md) for the files now in `folder`."""
    from edgefuse.export.inspect import graph_summary

    files = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST_NAME}
    graphs = {name: graph_summary(folder / name) for name in files if name.endswith(".onnx")}
    if src.family == "caption":
        comps = extra.get("components", {})
        inputs, outputs, seen_in, seen_out = [], [], set(), set()
        for comp in comps.values():
            inputs += [t for t in comp["inputs"] if t["name"] not in seen_in and not seen_in.add(t["name"])]
            outputs += [t for t in comp["outputs"] if t["name"] not in seen_out and not seen_out.add(t["name"])]
    else:
        inputs = [t.to_dict() for t in spec.inputs]
        outputs = [t.to_dict() for t in spec.outputs]
    preprocess = None
    if spec.image_size:
        from edgefuse.data.preprocess import PreprocessConfig

        preprocess = PreprocessConfig(image_size=spec.image_size, max_text_length=max(3, _max_len(src) or 32)).to_dict()
    return {
        "kind": "onnx",
        "model": src.name,
        "family": src.family,
        "tasks": list(src.tasks),
        "precision": "fp32",
        "weights_sha256": src.weights_sha256,
        "weights_source": src.weights_source,
        "files": files,
        "opset": opset,
        "inputs": inputs,
        "outputs": outputs,
        "dynamic_axes": {k: {"min": v.min, "max": v.max} for s in src.specs.values() for k, v in s.axes.items()},
        "image_size": spec.image_size,
        "max_text_length": _max_len(src),
        "preprocess": preprocess,
        "tokenizer_fingerprint": src.tokenizer.fingerprint() if src.tokenizer is not None else None,
        "graphs": graphs,
        "export_specs": {name: s.to_dict() for name, s in src.specs.items()},
        "tool_versions": tool_versions(*TOOLS),
        "parent": None,
        "created_by": created_by or f"edgefuse export {src.name}",
        "export_seconds": round(seconds, 2),
        "exporter": "torch.onnx.export(dynamo=True)",
        "graph_cleanup": ["onnxscript optimizer: constant folding", "dead-node removal", "onnx.checker"],
        **extra,
    }


def _max_len(src: Source) -> int | None:
    lens = [s.max_text_length for s in src.specs.values() if s.max_text_length]
    return max(lens) if lens else None
