"""Hugging Face models through Optimum's ONNX exporters (optional extra `[optimum]`).

`edgefuse export hf:PATH` (or a local folder holding a config.json) exports a local Hugging
Face model (no hub downloads) where Optimum has an ONNX config for its model_type (CLIP,
for example), then verifies it like every other export: ONNX Runtime vs the transformers
model at non-trace shapes, max abs / rel error and cosine per output. A model_type Optimum
does not know gets an error pointing to the package.module:factory route.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgefuse.artifacts import sha256_file, staged_dir, tool_versions, write_manifest
from edgefuse.errors import ExportError
from edgefuse.export.spec import AxisRange, ExportSpec, TensorSpec, Tolerance, image_feed, text_feed
from edgefuse.export.verify import make_cases, summarize, verify_onnx

log = logging.getLogger(__name__)

HF_PREFIX = "hf:"
OPTIMUM_HINT = "pip install 'edgefuse[optimum]' (optimum-onnx; it pins transformers < 4.58)"


def is_hf_ref(model: str) -> bool:
    """`hf:PATH`, or an existing local folder with a config.json."""
    if model.startswith(HF_PREFIX):
        return True
    p = Path(model)
    return p.is_dir() and (p / "config.json").is_file()


def hf_folder(model: str) -> Path:
    p = Path(model[len(HF_PREFIX):] if model.startswith(HF_PREFIX) else model)
    if not p.is_dir() or not (p / "config.json").is_file():
        raise ExportError(f"{p} is not a local Hugging Face model folder (no config.json)",
                          "save one with model.save_pretrained(folder); hub downloads are not done here", code="EF440")
    return p


def optimum_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("optimum") is not None and importlib.util.find_spec("transformers") is not None


def supported_tasks(model_type: str) -> list[str]:
    """Optimum's ONNX tasks for `model_type`; ExportError (pointing to factories) when none."""
    if not optimum_available():
        raise ExportError("Hugging Face export needs Optimum", OPTIMUM_HINT, code="EF441")
    import optimum.exporters.onnx.model_configs  # noqa: F401  (registers the ONNX configs)
    from optimum.exporters.tasks import TasksManager

    try:
        tasks = TasksManager.get_supported_tasks_for_model_type(model_type, exporter="onnx", library_name="transformers")
    except (KeyError, ValueError) as e:
        raise ExportError(f"Optimum has no ONNX config for model_type '{model_type}'",
                          "export it with a factory instead: edgefuse export package.module:factory "
                          "(see examples/byo_model)", code="EF442") from e
    return list(tasks)


def _pick_task(model_type: str, task: str | None) -> str:
    tasks = supported_tasks(model_type)
    if task is not None:
        if task not in tasks:
            from edgefuse.errors import suggest

            raise ExportError(f"Optimum cannot export {model_type} for task '{task}'", suggest(task, tasks), code="EF443")
        return task
    for pref in ("zero-shot-image-classification", "feature-extraction", "image-text-to-text"):
        if pref in tasks:
            return pref
    return tasks[0]


def hf_spec(onnx_path: Path, config: dict[str, Any], model_type: str) -> ExportSpec:
    """An ExportSpec read off Optimum's graph: its inputs, outputs and dynamic axes."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)

    def dims(vi: Any) -> tuple[int | str, ...]:
        return tuple(d.dim_param if d.dim_param else d.dim_value for d in vi.type.tensor_type.shape.dim)

    def dtype(vi: Any) -> str:
        return onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name

    inits = {i.name for i in m.graph.initializer}
    inputs = [TensorSpec(i.name, dtype(i), dims(i)) for i in m.graph.input if i.name not in inits]
    outputs = [TensorSpec(o.name, dtype(o), dims(o)) for o in m.graph.output]
    text_cfg = config.get("text_config", config)
    vision_cfg = config.get("vision_config", config)
    vocab = int(text_cfg.get("vocab_size", 1000))
    size = int(vision_cfg.get("image_size", 224))
    max_len = int(text_cfg.get("max_position_embeddings", 64))
    batch_axis = {d for t in inputs for d in t.shape[:1] if isinstance(d, str)}
    text_axis = {t.shape[1] for t in inputs if t.name in ("input_ids", "attention_mask") and isinstance(t.shape[1], str)}
    b = next(iter(batch_axis), "batch_size")
    s = next(iter(text_axis), "sequence_length")

    def feed(shape: dict[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        names = {t.name for t in inputs}
        if "input_ids" in names:
            out.update(text_feed(shape[b], shape[s], rng, vocab, cls_id=int(text_cfg.get("bos_token_id") or 0) % vocab,
                                 pad_id=int(text_cfg.get("pad_token_id") or 0) % vocab, first_word_id=min(5, vocab - 1)))
            if "attention_mask" not in names:
                out.pop("attention_mask")
        if "pixel_values" in names:
            out["pixel_values"] = image_feed(shape[b], size, rng)
        return out

    tol = Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.9999)
    return ExportSpec(
        family=f"hf-{model_type}", inputs=inputs, outputs=outputs, example_inputs=feed,
        tolerances={o.name: tol for o in outputs},
        axes={b: AxisRange(1, 64), s: AxisRange(2, max_len)},
        trace_shape={b: 2, s: 16},
        verify_shapes=[{b: 1, s: 4}, {b: 3, s: min(12, max_len)}, {b: 8, s: max_len}],
        image_size=size, max_text_length=max_len,
    )


def export_hf(model: str, out: str | Path | None = None, *, opset: int = 18, overwrite: bool = False, verify: bool = True,
              task: str | None = None, created_by: str | None = None, output_dir: str | Path = "artifacts") -> Any:
    """Export a local Hugging Face folder with Optimum and verify it; returns an ExportResult."""
    import tempfile

    from edgefuse.export.exporter import ExportResult, check_output

    t0 = time.perf_counter()
    folder = hf_folder(model)
    config = json.loads((folder / "config.json").read_text())
    model_type = str(config.get("model_type", "?"))
    task = _pick_task(model_type, task)
    out = Path(out) if out is not None else Path(output_dir) / f"{folder.name}-fp32"
    check_output(out, overwrite)
    import torch
    from optimum.exporters.onnx import main_export
    from transformers import AutoModel

    with staged_dir(out, overwrite=overwrite) as tmp:
        with tempfile.TemporaryDirectory(prefix="edgefuse-optimum-") as work:
            try:
                main_export(str(folder), output=work, task=task, opset=opset, device="cpu", do_validation=False,
                            local_files_only=True, library_name="transformers")
            except Exception as e:  # Optimum raises ValueError/KeyError/RuntimeError
                raise ExportError(f"Optimum failed to export {folder.name}: {str(e).splitlines()[0][:300]}",
                                  "or export it with a factory: edgefuse export package.module:factory", code="EF444") from e
            produced = sorted(Path(work).glob("*.onnx"))
            if len(produced) != 1:
                raise ExportError(f"Optimum wrote {len(produced)} ONNX files for {folder.name}",
                                  "multi-file Hugging Face exports are not supported here; use a factory", code="EF445")
            (tmp / "model.onnx").write_bytes(produced[0].read_bytes())
            tok = Path(work) / "tokenizer.json"
            if tok.exists():
                (tmp / "tokenizer.json").write_bytes(tok.read_bytes())
        spec = hf_spec(tmp / "model.onnx", config, model_type)
        summary = None
        checks = []
        if verify:
            hf = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()

            def reference(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                with torch.inference_mode():
                    res = hf(**{k: torch.from_numpy(v) for k, v in feed.items()})
                return {k: v.float().numpy() for k, v in res.items() if isinstance(v, torch.Tensor)}

            checks = verify_onnx(reference, tmp / "model.onnx", spec, make_cases(spec))
            summary = summarize(checks)
        weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {
            "kind": "onnx", "model": f"hf:{folder.name}", "family": spec.family, "tasks": [task], "precision": "fp32",
            "weights_sha256": sha256_file(weights[0]) if weights else None, "weights_source": str(folder),
            "files": files, "opset": opset, "inputs": [t.to_dict() for t in spec.inputs],
            "outputs": [t.to_dict() for t in spec.outputs], "image_size": spec.image_size,
            "max_text_length": spec.max_text_length, "export_specs": {"model.onnx": spec.to_dict()},
            "verification": {"model.onnx": summary} if summary else None,
            "tool_versions": tool_versions("torch", "onnx", "onnxruntime", "optimum", "optimum-onnx", "transformers"),
            "parent": None, "created_by": created_by or f"edgefuse export {model}", "exporter": "optimum",
            "export_seconds": round(time.perf_counter() - t0, 2),
        }
        write_manifest(tmp, manifest)
    return ExportResult(out, manifest, checks, time.perf_counter() - t0)
