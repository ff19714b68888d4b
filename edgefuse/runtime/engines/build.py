"""Build serialized TensorRT / TensorRT-RTX engines from an ONNX artifact for a named target.

One function, `build_engines`, for all three flavours (edgefuse.runtime.engines.flavours):
- precision comes from the artifact: strongly typed networks take it from the ONNX types and
  Q/DQ nodes (TensorRT 11 and TensorRT-RTX know nothing else); a weakly typed TensorRT 10 build
  (JetPack 6, `strongly_typed: false`) sets the FP16 flag for FP16 artifacts and FP16 + INT8
  for INT8 QDQ ones, so precision is never silently downgraded;
- one optimization profile from the target's min/opt/max per named dynamic axis;
- builder optimization level, workspace limit, compute-capability targets (RTX builds ahead
  of time for several GPUs; TensorRT 10/11 build for the GPU at hand, or AMPERE_PLUS), DLA core
  with optional GPU fallback (static shapes only);
- a timing cache file read before and written after each build (TensorRT 10/11; TensorRT-RTX
  ignores timing caches, and the manifest says so);
- split builds (vision / text / fusion engines) when the target asks and the model allows;
- everything lands in a staged folder: the engines, the tokenizer/answers files the kiosk
  needs, and manifest.json (edgefuse.runtime.engines.manifest).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from edgefuse.artifacts import atomic_write_bytes, read_manifest, sha256_bytes, sha256_file, staged_dir, tool_versions, write_manifest
from edgefuse.config import EdgeConfig, TargetConfig
from edgefuse.errors import ArtifactError, EngineError, TargetError
from edgefuse.runtime.engines.flavours import Flavour, capture, cuda_major_of_build, get_flavour, get_logger, import_trt, library_version
from edgefuse.runtime.engines.manifest import ENGINE_KIND, ENGINE_MANIFEST_VERSION
from edgefuse.runtime.engines.profiles import ProfileShapes, axis_ranges, profile_shapes

log = logging.getLogger(__name__)

INCONSISTENT = "not self-consistent"


@dataclass
class BuildResult:
    folder: Path
    manifest: dict[str, Any]
    warnings: list[str] = field(default_factory=list)  # TensorRT warnings/errors seen while building
    seconds: float = 0.0


@dataclass
class _Unit:
    """One engine to build: a name, an ONNX model (path or proto) and its I/O + profile."""

    name: str
    onnx_path: Path | None
    proto: Any
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    profile: ProfileShapes
    source_sha256: str


def _artifact(path: Path) -> tuple[Path, dict[str, Any], list[Path]]:
    """(folder, manifest, onnx files) of an artifact folder or a bare .onnx file."""
    if not path.exists():
        raise ArtifactError(f"artifact {path} not found", "run `edgefuse export` (and `edgefuse quantize`) first", code="EF605")
    if path.is_file():
        if path.suffix != ".onnx":
            raise ArtifactError(f"{path} is not an ONNX file", "pass an artifact folder or a .onnx file", code="EF606")
        folder = path.parent
        manifest = read_manifest(folder) if (folder / "manifest.json").is_file() else _manifest_from_onnx(path)
        return folder, manifest, [path]
    manifest = read_manifest(path)
    if manifest.get("kind") == ENGINE_KIND:
        raise ArtifactError(f"{path} is already an engine folder", "build from the ONNX artifact it was made from", code="EF606")
    files = [path / n for n in ("model.onnx", "image_encoder.onnx", "decoder.onnx") if (path / n).is_file()]
    if not files:
        raise ArtifactError(f"no ONNX model in {path}", "expected model.onnx (or image_encoder.onnx + decoder.onnx)", code="EF606")
    if (path / "model.onnx").is_file():
        files = [path / "model.onnx"]
    return path, manifest, files


def _manifest_from_onnx(path: Path) -> dict[str, Any]:
    """A minimal manifest for a bare .onnx file: specs with the graph's named dims."""
    return {"kind": "onnx", "model": path.stem, "precision": _precision_of(path), "inputs": _io_specs(path, "input"),
            "outputs": _io_specs(path, "output"), "files": {path.name: sha256_file(path)}}


def _io_specs(path: Path, which: str) -> list[dict[str, Any]]:
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    vis = model.graph.input if which == "input" else model.graph.output
    out = []
    for v in vis:
        if v.name in inits:
            continue
        tt = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else None) for d in tt.shape.dim]
        out.append({"name": v.name, "dtype": str(helper.tensor_dtype_to_np_dtype(tt.elem_type)), "shape": dims})
    return out


def _precision_of(path: Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if qdq:
        zero_types = {t.data_type for t in model.graph.initializer if t.name in {n.input[2] for n in qdq if len(n.input) > 2}}
        fp8 = {onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E4M3FNUZ, onnx.TensorProto.FLOAT8E5M2, onnx.TensorProto.FLOAT8E5M2FNUZ}
        return "fp8" if zero_types & fp8 else "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def default_output(artifact: Path, target: str) -> Path:
    base = artifact if artifact.is_dir() else artifact.parent
    return base.parent / f"{base.name}-{target}"


def _ranges(manifest: Mapping[str, Any], target: TargetConfig) -> dict[str, tuple[int, int, int]]:
    """The target's min/opt/max per axis, plus axes only the artifact declares (e.g. a decoder's
    past_length): those take the artifact's own [min, max] range with opt in the middle."""
    ranges = axis_ranges(target.profiles)
    for axis, r in (manifest.get("dynamic_axes") or {}).items():
        if axis in ranges or not isinstance(r, Mapping) or "max" not in r:
            continue
        lo, hi = int(r.get("min", 1)), int(r["max"])
        ranges[axis] = (lo, int(r.get("opt", (lo + hi + 1) // 2)), hi)
    declared = manifest.get("dynamic_axes") or {}
    if {"new_length", "past_length"} <= set(declared) and "total_length" in declared and \
            "new_length" not in target.profiles and "past_length" not in target.profiles:
        # a KV-cache decoder step: past + new <= total, so the two ranges are coupled. The
        # generation loop feeds one new token per step, so the engine is built for that.
        total = int(declared["total_length"]["max"])
        lo = int(declared["past_length"].get("min", 0))
        ranges["new_length"] = (1, 1, 1)
        ranges["past_length"] = (lo, max(lo, (total - 1) // 2), total - 1)
    return ranges


def _units(folder: Path, manifest: Mapping[str, Any], files: Sequence[Path], target_name: str, target: TargetConfig,
           split: bool) -> list[_Unit]:
    ranges = _ranges(manifest, target)
    dla = target.dla_core is not None
    max_text = manifest.get("max_text_length")
    units = []
    if split:
        import onnx

        from edgefuse.runtime.engines.split import split_model

        if len(files) != 1:
            raise EngineError("split engines apply to single-graph image-text models; this artifact is already split into "
                              f"{', '.join(f.name for f in files)}", f"set targets.{target_name}.split_engines: false", code="EF850")
        model = onnx.load(str(files[0]))
        shapes = profile_shapes(manifest["inputs"], ranges, target_name, max_text, dla)
        for part in split_model(model, manifest["inputs"], shapes, ranges):
            data = part.model.SerializeToString()
            units.append(_Unit(part.name, None, part.model, part.input_specs, part.output_specs, part.profile, sha256_bytes(data)))
        return units
    components = manifest.get("components") or {}
    for f in files:
        comp = components.get(f.name) or {}
        if comp.get("inputs"):
            specs_in, specs_out = comp["inputs"], comp.get("outputs") or _io_specs(f, "output")
        else:
            specs_in = manifest.get("inputs") if len(files) == 1 and manifest.get("inputs") else _io_specs(f, "input")
            specs_out = manifest.get("outputs") if len(files) == 1 and manifest.get("outputs") else _io_specs(f, "output")
        shapes = profile_shapes(specs_in, ranges, target_name, max_text, dla)
        units.append(_Unit(f.stem, f, None, list(specs_in), list(specs_out), shapes, sha256_file(f)))
    return units


def _parse(trt: ModuleType, builder: Any, unit: _Unit, strongly_typed: bool) -> tuple[Any, Any]:
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, get_logger(trt))
    ok = parser.parse_from_file(str(unit.onnx_path)) if unit.onnx_path is not None else parser.parse(unit.proto.SerializeToString())
    if not ok:
        errs = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise EngineError(f"{trt.__name__} could not parse {unit.name}: {errs[0] if errs else 'unknown error'}",
                          "check the op set against the TensorRT support matrix; see the log with -v", code="EF825")
    return network, parser


def _compute_capabilities(trt: ModuleType, flavour: Flavour, cfg: Any, target_name: str, ccs: Sequence[str]) -> dict[str, Any]:
    """Set the builder's target GPUs; returns what the manifest should record."""
    from edgefuse.runtime.engines import cuda

    if flavour.compute_capabilities is not None:  # TensorRT-RTX: ahead of time, named SMs
        if not ccs:
            raise TargetError(f"target {target_name} lists no compute_capability", f"e.g. compute_capability: ['8.6', '8.9', '12.0'] "
                              f"(valid: {', '.join(flavour.compute_capabilities)})", code="EF818")
        bad = [c for c in ccs if c not in flavour.compute_capabilities]
        if bad:
            raise TargetError(f"target {target_name}: {flavour.name} cannot build for compute capability {', '.join(bad)}",
                              f"valid: {', '.join(flavour.compute_capabilities)}", code="EF818")
        cfg.num_compute_capabilities = len(ccs)
        for i, c in enumerate(ccs):
            cfg.set_compute_capability(getattr(trt.ComputeCapability, "SM" + c.replace(".", "")), i)
        return {"compute_capability": list(ccs), "hardware_compatibility": None}
    # TensorRT 10 / 11 build for the GPU they run on
    if cuda.device_count() < 1:
        raise TargetError(f"{flavour.name} builds engines on the GPU they are for, and this machine has none",
                          f"run `edgefuse build --target {target_name}` on the device itself (e.g. the Jetson)", code="EF819")
    here = cuda.compute_capability()
    if len(ccs) > 1:
        if any(float(c) < 8.0 for c in ccs):
            raise TargetError(f"target {target_name}: one engine for several GPUs needs compute capability >= 8.0 (AMPERE_PLUS)",
                              "list one compute capability per target below 8.0", code="EF818")
        cfg.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
        return {"compute_capability": list(ccs), "hardware_compatibility": "AMPERE_PLUS"}
    if ccs and ccs[0] != here:
        raise TargetError(f"target {target_name} is for compute capability {ccs[0]} but this GPU is {here}",
                          "build on the target device, or list several capabilities (>= 8.0) for AMPERE_PLUS", code="EF818")
    return {"compute_capability": [here], "hardware_compatibility": None}


def _configure(trt: ModuleType, flavour: Flavour, builder: Any, network: Any, unit: _Unit, target_name: str, target: TargetConfig,
               precision: str, timing_cache: Any) -> tuple[Any, dict[str, Any]]:
    cfg = builder.create_builder_config()
    record: dict[str, Any] = {"optimization_level": target.optimization_level, "workspace_mb": target.workspace_mb,
                              "strongly_typed": target.strongly_typed or flavour.strongly_typed_only, "precision_flags": [],
                              "dla_core": target.dla_core, "gpu_fallback": target.gpu_fallback if target.dla_core is not None else None}
    if not 0 <= target.optimization_level <= 5:
        raise TargetError(f"target {target_name}: optimization_level {target.optimization_level} is outside 0..5", "use 0..5 (3 is TensorRT's default)",
                          code="EF818")
    cfg.builder_optimization_level = int(target.optimization_level)
    if target.workspace_mb:
        cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(target.workspace_mb) << 20)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        cfg.clear_flag(trt.BuilderFlag.TF32)  # TF32 is on by default: an FP32 artifact stays FP32, no silent downgrade
        record["tf32"] = False
    if not record["strongly_typed"]:  # TensorRT 10 weakly typed: flags say which precisions kernels may use
        if precision in ("fp16", "int8"):
            cfg.set_flag(trt.BuilderFlag.FP16)  # layers left outside Q/DQ may run in FP16
            record["precision_flags"].append("FP16")
        if precision == "int8":
            cfg.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: scales come from the Q/DQ nodes, no calibrator
            record["precision_flags"].append("INT8")
        if precision == "fp8":
            for flag in ("FP16", "FP8"):
                cfg.set_flag(getattr(trt.BuilderFlag, flag))
                record["precision_flags"].append(flag)
    if target.dla_core is not None:
        if not flavour.dla:
            raise TargetError(f"target {target_name}: {flavour.name} has no DLA", "remove dla_core from the target", code="EF817")
        if target.dla_core >= builder.num_DLA_cores:
            raise TargetError(f"target {target_name} asks for DLA core {target.dla_core} but this device has {builder.num_DLA_cores}",
                              "Orin AGX/NX have DLA cores 0 and 1; Orin Nano has none", code="EF817")
        cfg.default_device_type = trt.DeviceType.DLA
        cfg.DLA_core = int(target.dla_core)
        if target.gpu_fallback:
            cfg.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if timing_cache is not None:
        cfg.set_timing_cache(timing_cache, False)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shapes = unit.profile.get(t.name)
        if shapes is None:
            raise EngineError(f"network input '{t.name}' of {unit.name} is not in the artifact manifest", "re-export the artifact",
                              code="EF826")
        profile.set_shape(t.name, tuple(shapes["min"]), tuple(shapes["opt"]), tuple(shapes["max"]))
    cfg.add_optimization_profile(profile)
    record.update(_compute_capabilities(trt, flavour, cfg, target_name, list(target.compute_capability)))
    return cfg, record


def build_engines(
    artifact: str | os.PathLike[str],
    target_name: str,
    config: EdgeConfig,
    out: str | os.PathLike[str] | None = None,
    timing_cache: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    split: bool | None = None,
) -> BuildResult:
    """Build the engine(s) for `target_name` from an ONNX artifact; returns the engine folder.

    `split=None` follows the target's split_engines. Raises TargetError (unknown target,
    flavour not installed, bad target settings), ArtifactError (bad input) or EngineError
    (TensorRT refused the model).
    """
    t_start = time.perf_counter()
    artifact = Path(artifact)
    target = config.target(target_name)
    flavour = get_flavour(target.flavour)
    trt = import_trt(flavour)
    folder, manifest, files = _artifact(artifact)
    precision = str(manifest.get("precision") or _precision_of(files[0]))
    strongly_typed = target.strongly_typed or flavour.strongly_typed_only
    if not target.strongly_typed and flavour.strongly_typed_only:
        log.warning("target %s: %s is strongly typed only; precision comes from the ONNX types", target_name, flavour.name)
    if precision == "fp8":
        old_gpus = [c for c in target.compute_capability if float(c) < 8.9]
        if old_gpus:
            raise TargetError(f"target {target_name}: FP8 needs compute capability >= 8.9, but the target lists {', '.join(old_gpus)}",
                              "drop those capabilities from the target, or build the FP16 / INT8 artifact for them", code="EF818")
    do_split = target.split_engines if split is None else split
    units = _units(folder, manifest, files, target_name, target, do_split)
    out_dir = Path(out) if out is not None else default_output(artifact, target_name)

    cache_path = Path(timing_cache) if timing_cache else None
    cache_obj, cache_note = None, None
    builder = trt.Builder(get_logger(trt))
    if cache_path is not None and not flavour.timing_cache:
        cache_note = f"{flavour.name} has no timing cache (its timing-cache calls are no-ops); {cache_path} left unused"
        log.warning(cache_note)
    engines: list[dict[str, Any]] = []
    warnings: list[str] = []
    build_record: dict[str, Any] = {}
    with staged_dir(out_dir, overwrite=overwrite) as tmp:
        for unit in units:
            with capture(trt) as cap:
                network, _parser = _parse(trt, builder, unit, strongly_typed)
                if cache_path is not None and flavour.timing_cache and cache_obj is None:
                    tmp_cfg = builder.create_builder_config()
                    cache_obj = tmp_cfg.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
                cfg, build_record = _configure(trt, flavour, builder, network, unit, target_name, target, precision, cache_obj)
                t0 = time.perf_counter()
                blob = builder.build_serialized_network(network, cfg)
                seconds = time.perf_counter() - t0
            warnings.extend(cap.warnings())
            bad = [m for m in cap.messages if INCONSISTENT in m[1]]
            if blob is None or bad:
                errs = [m for _, m in bad] or cap.errors() or ["no engine returned"]
                raise EngineError(f"{flavour.name} could not build {unit.name}: {errs[0].splitlines()[0][:300]}",
                                  "see the TensorRT log with -v; check the target's profiles and the model's ops", code="EF820")
            data = bytes(blob)
            name = f"{unit.name}.engine"
            atomic_write_bytes(tmp / name, data)
            engines.append({"name": unit.name, "file": name, "sha256": sha256_bytes(data), "bytes": len(data),
                            "source": unit.onnx_path.name if unit.onnx_path is not None else f"split of {files[0].name}",
                            "source_sha256": unit.source_sha256, "inputs": unit.inputs, "outputs": unit.outputs,
                            "profile_shapes": unit.profile, "build_seconds": round(seconds, 3)})
            log.info("built %s (%d bytes) in %.2f s", name, len(data), seconds)
        if cache_obj is not None and cache_path is not None:
            atomic_write_bytes(cache_path, bytes(cache_obj.serialize()))
        copied = {}
        for fname in (manifest.get("files") or {}):
            src = folder / fname
            if src.suffix in (".onnx", ".data") or fname.endswith(".onnx.data") or not src.is_file():
                continue
            shutil.copy2(src, tmp / fname)
            copied[fname] = sha256_file(tmp / fname)
        for extra in ("tokenizer.json", "answers.json"):
            if extra not in copied and (folder / extra).is_file():
                shutil.copy2(folder / extra, tmp / extra)
                copied[extra] = sha256_file(tmp / extra)
        engine_manifest = _engine_manifest(manifest, artifact, files, flavour, trt, target_name, target, engines, build_record,
                                           cache_path, cache_note, copied, do_split)
        write_manifest(tmp, engine_manifest)
    return BuildResult(out_dir, engine_manifest, warnings, time.perf_counter() - t_start)


def _engine_manifest(parent: Mapping[str, Any], artifact: Path, files: Sequence[Path], flavour: Flavour, trt: ModuleType,
                     target_name: str, target: TargetConfig, engines: list[dict[str, Any]], build: dict[str, Any],
                     cache_path: Path | None, cache_note: str | None, copied: dict[str, str], split: bool) -> dict[str, Any]:
    from edgefuse.runtime.engines import cuda

    keep = ("model", "family", "tasks", "precision", "weights_sha256", "image_size", "max_text_length", "opset")
    m: dict[str, Any] = {k: parent.get(k) for k in keep if k in parent}
    m.update({
        "kind": ENGINE_KIND,
        "engine_manifest_version": ENGINE_MANIFEST_VERSION,
        "flavour": flavour.name,
        "tensorrt_module": trt.__name__,
        "tensorrt_version": library_version(trt),
        "compute_capability": build.pop("compute_capability"),
        "hardware_compatibility": build.pop("hardware_compatibility"),
        "cuda_version": {"library_built_for": cuda_major_of_build(flavour), "runtime_at_build": cuda.runtime_version()},
        "target": {"name": target_name, **asdict(target)},
        "profiles": {k: list(v) for k, v in _ranges(parent, target).items()},
        "profile_sources": {k: ("target" if k in target.profiles else "artifact") for k in _ranges(parent, target)},
        "split": split,
        "engines": engines,
        "inputs": parent.get("inputs") or engines[0]["inputs"],
        "outputs": parent.get("outputs") or [o for e in engines for o in e["outputs"]],
        "source": {"artifact": str(artifact), "onnx": {f.name: sha256_file(f) for f in files}},
        "build": {**build, "timing_cache": str(cache_path) if cache_path else None, "timing_cache_note": cache_note},
        "files": {**{e["file"]: e["sha256"] for e in engines}, **copied},
        "tool_versions": tool_versions("onnx", "onnxruntime", "tensorrt", "tensorrt-rtx-cu13", "tensorrt_rtx_cu13_bindings"),
        "parent": dict(parent),
        "created_by": f"edgefuse build {artifact} --target {target_name}",
    })
    return m
