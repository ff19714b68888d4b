"""Runners: one interface over every backend (ONNX Runtime CPU / CUDA / TensorRT EP, engines).

Polygraphy-style: `activate()` loads the backend, `infer(feed)` runs it, `deactivate()` frees
it; a runner is also a context manager. The base class checks every feed (names, dtypes,
ranks, fixed dimensions, and that a named dynamic axis such as `batch` has one size across
all inputs) in one place, so a backend only ever sees valid input and the kiosk, the
comparator and the benchmarks see the same errors whatever the backend.

Torch-free: this module imports numpy and (lazily, on activate) onnxruntime only.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefuse.errors import InputError, RunnerError, suggest

log = logging.getLogger(__name__)

Dim = int | str | None  # fixed size, named dynamic axis, or unnamed dynamic axis

# ONNX Runtime type strings -> numpy dtypes (the ones our models use, plus the common rest).
_ORT_TYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(bool)": np.dtype(np.bool_),
}

PROVIDERS = ("cpu", "cuda", "tensorrt")


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one model input or output; str dims are named dynamic axes."""

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...]

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype.name}[{dims}]"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype.name, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        return cls(str(d["name"]), np.dtype(str(d["dtype"])), tuple(_norm_dim(x) for x in d.get("shape", [])))


def _norm_dim(d: Any) -> Dim:
    if d is None or isinstance(d, int):
        return d
    if isinstance(d, str):
        return int(d) if d.isdigit() else (d or None)
    return None


def check_feed(specs: Sequence[TensorSpec], feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Validate `feed` against `specs`; return it as contiguous numpy arrays.

    Raises InputError naming the first offending input: a missing or unexpected name, a wrong
    dtype, a wrong rank, a fixed dimension that differs, or a named dynamic axis (e.g. `batch`)
    whose size differs between inputs.
    """
    if not isinstance(feed, Mapping):
        raise InputError(f"feed must be a mapping of input name -> array, got {type(feed).__name__}",
                         "pass a dict such as {'pixel_values': ..., 'input_ids': ...}", code="EF711")
    names = [s.name for s in specs]
    for key in feed:
        if key not in names:
            raise InputError(f"unexpected input '{key}'", suggest(str(key), names), code="EF712")
    axes: dict[str, tuple[int, str]] = {}
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.name not in feed:
            raise InputError(f"missing input '{spec.name}' ({spec.describe()})", f"the model needs: {', '.join(names)}", code="EF713")
        value = feed[spec.name]
        if not isinstance(value, np.ndarray):
            raise InputError(f"input '{spec.name}' must be a numpy array, got {type(value).__name__}",
                             "convert with np.asarray(..., dtype=...)", code="EF714")
        if value.dtype != spec.dtype:
            raise InputError(f"input '{spec.name}' has dtype {value.dtype.name}, expected {spec.dtype.name}",
                             f"cast it: x.astype(np.{spec.dtype.name})", code="EF715")
        if value.ndim != len(spec.shape):
            raise InputError(f"input '{spec.name}' has rank {value.ndim} (shape {list(value.shape)}), expected {spec.describe()}",
                             "add or drop the batch axis", code="EF716")
        for i, (got, want) in enumerate(zip(value.shape, spec.shape, strict=True)):
            if isinstance(want, int) and got != want:
                raise InputError(f"input '{spec.name}' dim {i} is {got}, expected {want} ({spec.describe()})",
                                 "resize with the model's preprocessing (edgefuse.data.preprocess)", code="EF717")
            if isinstance(want, str):
                if got < 1 and want == "batch":  # other axes may be empty (a KV cache's past_length starts at 0)
                    raise InputError(f"input '{spec.name}' axis '{want}' is empty", "send at least one item", code="EF718")
                if want in axes and axes[want][0] != got:
                    size, other = axes[want]
                    raise InputError(f"input '{spec.name}' axis '{want}' is {got} but '{other}' has {size}",
                                     f"every input must share the '{want}' size", code="EF719")
                axes.setdefault(want, (got, spec.name))
        out[spec.name] = np.ascontiguousarray(value)
    return out


class Runner:
    """Backend-neutral runner. Subclasses implement `_activate`, `_infer`, `_deactivate`.

    `input_specs` / `output_names` are valid after activation (a subclass may fill them
    earlier from a manifest). `infer` checks the feed, then calls the backend, and records
    the wall time of the backend call in `last_inference_time`.
    """

    name = "runner"

    def __init__(self) -> None:
        self.is_active = False
        self._input_specs: list[TensorSpec] = []
        self._output_names: list[str] = []
        self.last_inference_time: float | None = None

    # --- interface -------------------------------------------------------------------------
    @property
    def input_specs(self) -> list[TensorSpec]:
        self._require_active("input_specs")
        return list(self._input_specs)

    @property
    def output_names(self) -> list[str]:
        self._require_active("output_names")
        return list(self._output_names)

    def activate(self) -> Runner:
        if self.is_active:
            raise RunnerError(f"{self.name} is already active", "call deactivate() before activating again", code="EF701")
        self._activate()
        self.is_active = True
        return self

    def deactivate(self) -> None:
        if not self.is_active:
            return
        try:
            self._deactivate()
        finally:
            self.is_active = False

    def infer(self, feed: Mapping[str, Any], check: bool = True) -> dict[str, np.ndarray]:
        """Run the model: returns {output name: array} in `output_names` order."""
        self._require_active("infer")
        arrays = check_feed(self._input_specs, feed) if check else {k: np.ascontiguousarray(v) for k, v in feed.items()}
        t0 = time.perf_counter()
        out = self._infer(arrays)
        self.last_inference_time = time.perf_counter() - t0
        return out

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} active={self.is_active}>"

    # --- backend hooks ---------------------------------------------------------------------
    def _activate(self) -> None:
        raise NotImplementedError

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _deactivate(self) -> None:
        raise NotImplementedError

    def _require_active(self, what: str) -> None:
        if not self.is_active:
            raise RunnerError(f"{self.name}: {what} needs an active runner", "use `with runner:` or call runner.activate()", code="EF702")


# --- ONNX Runtime ----------------------------------------------------------------------------

_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
               "layout": "ORT_ENABLE_LAYOUT", "all": "ORT_ENABLE_ALL"}


def tensorrt_provider_options(
    specs: Sequence[TensorSpec],
    profiles: Mapping[str, tuple[int, int, int]] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    fp16: bool = False,
    int8: bool = False,
    workspace_mb: int | None = None,
    device_id: int = 0,
    builder_optimization_level: int | None = None,
) -> dict[str, str]:
    """Options for ORT's TensorrtExecutionProvider: engine cache, timing cache, profile shapes.

    `profiles` maps a named dynamic axis to (min, opt, max), e.g. {"batch": (1, 1, 8),
    "text_length": (4, 16, 32)}; every input's shape is spelled out for TensorRT's
    optimisation profile (`trt_profile_{min,opt,max}_shapes`, "name:1x3x64x64,..."). An input
    with a dynamic axis not in `profiles` is refused: TensorRT would otherwise build one
    engine per new shape seen at run time.
    """
    opts: dict[str, str] = {"device_id": str(device_id)}
    if cache_dir is not None:
        cache = str(Path(cache_dir))
        Path(cache).mkdir(parents=True, exist_ok=True)
        opts.update({"trt_engine_cache_enable": "True", "trt_engine_cache_path": cache,
                     "trt_timing_cache_enable": "True", "trt_timing_cache_path": cache})
    if fp16:
        opts["trt_fp16_enable"] = "True"
    if int8:
        opts["trt_int8_enable"] = "True"  # QDQ models carry their scales; no calibration table needed
    if workspace_mb:
        opts["trt_max_workspace_size"] = str(int(workspace_mb) << 20)
    if builder_optimization_level is not None:
        opts["trt_builder_optimization_level"] = str(builder_optimization_level)
    dynamic = any(not isinstance(d, int) for s in specs for d in s.shape)
    if dynamic:
        profiles = dict(profiles or {})
        parts: dict[str, list[str]] = {"min": [], "opt": [], "max": []}
        for spec in specs:
            dims: dict[str, list[str]] = {"min": [], "opt": [], "max": []}
            for i, d in enumerate(spec.shape):
                if isinstance(d, int):
                    for k in dims:
                        dims[k].append(str(d))
                    continue
                if d is None or d not in profiles:
                    raise RunnerError(f"input '{spec.name}' dim {i} ({d or 'unnamed'}) is dynamic and has no TensorRT profile",
                                      f"give profiles for: {d or 'that axis'} (e.g. targets.<name>.profiles in edge_config.yaml)",
                                      code="EF760")
                lo, opt, hi = profiles[d]
                if not (1 <= lo <= opt <= hi):
                    raise RunnerError(f"profile for '{d}' needs 1 <= min <= opt <= max, got {lo}/{opt}/{hi}", "fix the profile", code="EF761")
                dims["min"].append(str(lo))
                dims["opt"].append(str(opt))
                dims["max"].append(str(hi))
            for k in parts:
                parts[k].append(f"{spec.name}:{'x'.join(dims[k])}")
        for k in parts:
            opts[f"trt_profile_{k}_shapes"] = ",".join(parts[k])
    return opts


def _is_fp16_model(path: Path, manifest: Mapping[str, Any] | None) -> bool:
    """True when the model holds float16 weights (ORT 1.32's CPU EP then needs NchwcTransformer off)."""
    if manifest and manifest.get("precision"):
        return manifest["precision"] == "fp16"
    try:
        import onnx  # optional: the runtime does not require it
    except ImportError:
        return False
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - unreadable here means ORT reports it better
        return False
    return any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)


class OrtRunner(Runner):
    """ONNX Runtime runner for the CPU, CUDA and TensorRT execution providers.

    - cpu: `threads` sets intra-op threads (0 = ORT default); `optimization` picks the graph
      optimisation level; FP16 models get `disabled_optimizers=["NchwcTransformer"]` (ORT 1.32's
      CPU EP crashes creating an FP16 session with it on).
    - cuda: inputs and outputs go through IO binding. `cuda_graph=True` captures a CUDA graph
      per input-shape signature and replays it: only valid when every node runs on the CUDA EP
      (no CPU fallback or memcpy nodes, no control flow) — ORT refuses the session otherwise, and
      this runner then falls back to plain IO binding with a warning. TF32 is off unless `tf32=True`
      (ORT's CUDA EP enables it by default, which moves FP32 logits by ~1e-3).
    - tensorrt: ORT's TensorRT EP with engine + timing cache and optimisation profile shapes
      built from `profiles` (see `tensorrt_provider_options`); CUDA then CPU as fallbacks.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        provider: str = "cpu",
        threads: int = 0,
        optimization: str = "all",
        cuda_graph: bool = False,
        device_id: int = 0,
        trt_profiles: Mapping[str, tuple[int, int, int]] | None = None,
        trt_cache_dir: str | os.PathLike[str] | None = None,
        trt_fp16: bool = False,
        trt_int8: bool = False,
        manifest: Mapping[str, Any] | None = None,
        disabled_optimizers: Sequence[str] | None = None,
        tf32: bool = False,
    ) -> None:
        super().__init__()
        self.model_path = Path(model_path)
        if provider not in PROVIDERS:
            raise RunnerError(f"unknown provider '{provider}'", suggest(provider, PROVIDERS), code="EF703")
        if optimization not in _OPT_LEVELS:
            raise RunnerError(f"unknown optimization level '{optimization}'", suggest(optimization, _OPT_LEVELS), code="EF704")
        if not self.model_path.is_file():
            raise RunnerError(f"model file {self.model_path} not found", "point at a model.onnx written by `edgefuse export`", code="EF705")
        self.provider = provider
        self.threads = threads
        self.optimization = optimization
        self.cuda_graph = cuda_graph
        self.tf32 = tf32
        self.device_id = device_id
        self.trt_profiles = dict(trt_profiles or {})
        self.trt_cache_dir = trt_cache_dir
        self.trt_fp16 = trt_fp16
        self.trt_int8 = trt_int8
        self.manifest = dict(manifest) if manifest else None
        self.disabled_optimizers = list(disabled_optimizers) if disabled_optimizers is not None else None
        self.name = f"ort-{provider}:{self.model_path.name}"
        self.session: Any = None
        self._graphs: dict[tuple[tuple[int, ...], ...], tuple[int, Any, dict[str, Any], dict[str, Any]]] = {}

    # --- session ---------------------------------------------------------------------------
    def _providers(self, specs: Sequence[TensorSpec]) -> list[Any]:
        import onnxruntime as ort

        available = ort.get_available_providers()
        # TF32 off unless asked: an FP32 artifact should compute in FP32 (ORT's CUDA EP defaults it on)
        cuda_opts: dict[str, Any] = {"device_id": self.device_id, "use_tf32": "1" if self.tf32 else "0"}
        if self.cuda_graph:
            cuda_opts["enable_cuda_graph"] = "1"
        if self.provider == "cpu":
            return ["CPUExecutionProvider"]
        if self.provider == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise RunnerError("the CUDA execution provider is not available in this onnxruntime build",
                                  "install onnxruntime-gpu matching your CUDA, or use provider='cpu'", code="EF706")
            return [("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]
        if "TensorrtExecutionProvider" not in available:
            raise RunnerError("the TensorRT execution provider is not available in this onnxruntime build",
                              "install onnxruntime-gpu with TensorRT libraries, or use provider='cuda'", code="EF707")
        cache = self.trt_cache_dir or (self.model_path.parent / ".trt-cache")
        trt = tensorrt_provider_options(specs, self.trt_profiles, cache, fp16=self.trt_fp16, int8=self.trt_int8,
                                        device_id=self.device_id)
        return [("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]

    def _session_options(self) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[self.optimization])
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = 1
        so.log_severity_level = 3
        return so

    def _activate(self) -> None:
        import onnxruntime as ort

        manifest_specs = [TensorSpec.from_dict(d) for d in (self.manifest or {}).get("inputs", [])]
        disabled = self.disabled_optimizers
        if disabled is None:
            disabled = ["NchwcTransformer"] if self.provider == "cpu" and _is_fp16_model(self.model_path, self.manifest) else []
        kwargs: dict[str, Any] = {"disabled_optimizers": disabled} if disabled else {}
        try:
            specs = manifest_specs
            if self.provider == "tensorrt" and not specs:
                specs = self._probe_specs()  # TensorRT profiles need every input's shape
            providers = self._providers(specs)
            self.session = ort.InferenceSession(str(self.model_path), self._session_options(), providers=providers, **kwargs)
        except RunnerError:
            raise
        except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph / RuntimeException types
            if self.cuda_graph and self.provider == "cuda":
                log.warning("CUDA graph capture refused for %s (%s); using IO binding without graphs",
                            self.model_path.name, str(e).splitlines()[0])
                self.cuda_graph = False
                providers = self._providers([])
                self.session = ort.InferenceSession(str(self.model_path), self._session_options(), providers=providers, **kwargs)
            else:
                raise RunnerError(f"onnxruntime could not load {self.model_path.name}: {str(e).splitlines()[0][:300]}",
                                  "re-export the model, or check the onnxruntime version", code="EF708") from e
        self._input_specs = self._specs_from_session(manifest_specs)
        self._output_names = [o.name for o in self.session.get_outputs()]
        self._graphs.clear()
        log.info("activated %s on %s", self.model_path.name, self.session.get_providers())

    def _probe_specs(self) -> list[TensorSpec]:
        """Input specs read from an unoptimised CPU session (no manifest beside the model)."""
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(str(self.model_path), so, providers=["CPUExecutionProvider"])
        try:
            return self._specs_from_session([])
        finally:
            self.session = None

    def _specs_from_session(self, manifest_specs: Sequence[TensorSpec]) -> list[TensorSpec]:
        """Session input specs; dynamic axis names come from the manifest when it has them."""
        by_name = {s.name: s for s in manifest_specs}
        specs = []
        for inp in self.session.get_inputs():
            dtype = _ORT_TYPES.get(inp.type)
            if dtype is None:
                raise RunnerError(f"input '{inp.name}' has unsupported type {inp.type}", "export with float/int64 inputs", code="EF709")
            shape = [_norm_dim(d) for d in inp.shape]
            m = by_name.get(inp.name)
            if m is not None and len(m.shape) == len(shape):
                shape = [md if (not isinstance(sd, int) and isinstance(md, str)) else sd for sd, md in zip(shape, m.shape, strict=True)]
            specs.append(TensorSpec(inp.name, dtype, tuple(shape)))
        return specs

    def _deactivate(self) -> None:
        self._graphs.clear()
        self.session = None

    @property
    def providers(self) -> list[str]:
        self._require_active("providers")
        return list(self.session.get_providers())

    # --- inference -------------------------------------------------------------------------
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            if self.provider == "cpu":
                outs = self.session.run(self._output_names, feed)
                return dict(zip(self._output_names, outs, strict=True))
            if self.cuda_graph:
                return self._infer_cuda_graph(feed)
            return self._infer_io_binding(feed)
        except Exception as e:
            if isinstance(e, RunnerError):
                raise
            raise RunnerError(f"{self.name} failed: {str(e).splitlines()[0][:300]}", "check the input shapes against the manifest", code="EF720") from e

    def _infer_io_binding(self, feed: dict[str, np.ndarray], run_options: Any = None) -> dict[str, np.ndarray]:
        binding = self.session.io_binding()
        for name, arr in feed.items():
            binding.bind_cpu_input(name, arr)
        for name in self._output_names:
            binding.bind_output(name, "cuda", self.device_id)
        if run_options is None:
            self.session.run_with_iobinding(binding)
        else:
            self.session.run_with_iobinding(binding, run_options)
        return dict(zip(self._output_names, binding.copy_outputs_to_cpu(), strict=True))

    def _infer_cuda_graph(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Replay a captured CUDA graph; one graph (gpu_graph_id 1, 2, ...) per input-shape signature.

        CUDA graphs need fixed device addresses: inputs are copied into OrtValues that live on
        the GPU for the graph's lifetime (update_inplace), and outputs are pre-allocated there.
        A new signature first runs once uncaptured (gpu_graph_id -1) to learn the output
        shapes; ORT then captures that signature's graph on its first runs and replays it after.
        """
        import onnxruntime as ort

        key = tuple(feed[s.name].shape for s in self._input_specs)
        entry = self._graphs.get(key)
        if entry is None:
            skip = ort.RunOptions()
            skip.add_run_config_entry("gpu_graph_id", "-1")
            try:
                probe = self._infer_io_binding(feed, skip)
            except Exception as e:  # noqa: BLE001 - e.g. nodes outside the CUDA EP
                return self._graphs_refused(feed, e)
            graph_id = len(self._graphs) + 1
            inputs = {n: ort.OrtValue.ortvalue_from_numpy(a, "cuda", self.device_id) for n, a in feed.items()}
            outputs = {n: ort.OrtValue.ortvalue_from_shape_and_type(list(probe[n].shape), probe[n].dtype, "cuda", self.device_id)
                       for n in self._output_names}
            binding = self.session.io_binding()
            for n, v in inputs.items():
                binding.bind_ortvalue_input(n, v)
            for n, v in outputs.items():
                binding.bind_ortvalue_output(n, v)
            ro = ort.RunOptions()
            ro.add_run_config_entry("gpu_graph_id", str(graph_id))
            entry = (ro, binding, inputs, outputs)
            self._graphs[key] = entry
        ro, binding, inputs, _ = entry
        for n, a in feed.items():
            inputs[n].update_inplace(a)
        try:
            self.session.run_with_iobinding(binding, ro)
        except Exception as e:  # noqa: BLE001
            if len(self._graphs) == 1:
                return self._graphs_refused(feed, e)
            raise
        return dict(zip(self._output_names, binding.copy_outputs_to_cpu(), strict=True))

    def _graphs_refused(self, feed: dict[str, np.ndarray], error: Exception) -> dict[str, np.ndarray]:
        """ORT refused CUDA graphs for this model: reopen without them and carry on with IO binding."""
        log.warning("CUDA graphs refused for %s (%s); using IO binding without graphs", self.model_path.name,
                    str(error).splitlines()[0][:200])
        self.cuda_graph = False
        self._graphs.clear()
        self.session = None
        self._activate()
        return self._infer_io_binding(feed)


# --- opening artifacts ----------------------------------------------------------------------

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def resolve_model_file(path: str | os.PathLike[str], file: str | None = None) -> tuple[Path, dict[str, Any] | None]:
    """Find the model file inside an artifact folder (or take a file as is) and its manifest."""
    from edgefuse.artifacts import MANIFEST_NAME, read_manifest

    p = Path(path)
    if not p.exists():
        raise RunnerError(f"artifact {p} not found", "run `edgefuse export` first, or check the path", code="EF705")
    if p.is_file():
        manifest = read_manifest(p.parent) if (p.parent / MANIFEST_NAME).is_file() else None
        return p, manifest
    manifest = read_manifest(p)
    if file is not None:
        candidates = [file]
    else:
        listed = [n for n in (manifest.get("files") or {}) if n.endswith((".onnx", *ENGINE_SUFFIXES))]
        candidates = ["model.onnx", *listed]
    for name in candidates:
        if (p / name).is_file():
            return p / name, manifest
    present = sorted(x.name for x in p.iterdir() if x.suffix in (".onnx", *ENGINE_SUFFIXES))
    raise RunnerError(f"no model file in {p}" + (f" named {file}" if file else ""),
                      f"files present: {', '.join(present) or 'none'}; pass file=<name>", code="EF721")


def open_runner(path: str | os.PathLike[str], provider: str = "cpu", file: str | None = None, **options: Any) -> Runner:
    """A runner (not yet active) for an artifact folder, an .onnx file or a TensorRT engine.

    Folders are resolved through their manifest (`model.onnx` by default; `file=` picks e.g.
    `decoder.onnx`). Engines go to the TensorRT engine runner (edgefuse.runtime.engines).
    """
    model, manifest = resolve_model_file(path, file)
    manifest = options.pop("manifest", None) or manifest
    if model.suffix in ENGINE_SUFFIXES or (manifest or {}).get("kind") in ("tensorrt", "tensorrt-rtx", "engine"):
        try:
            from edgefuse.runtime import engines
        except ImportError as e:
            raise RunnerError(f"{model.name} is a TensorRT engine and the engine runner is not available",
                              "install the tensorrt extra, or open the ONNX artifact instead", code="EF722") from e
        factory = getattr(engines, "open_engine_runner", None) or getattr(engines, "EngineRunner")
        return factory(model, **options)
    return OrtRunner(model, provider=provider, manifest=manifest, **options)
