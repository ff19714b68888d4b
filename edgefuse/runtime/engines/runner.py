"""The engine Runner: TensorRT / TensorRT-RTX engines behind the common Runner interface.

`validate`, `bench` and the kiosk open an engine folder through
`edgefuse.runtime.runners.open_runner` and get this runner; it behaves like the ONNX Runtime
one (same feed checks in the base class, same output dict). On activation it verifies the
manifest against this machine (file hashes, TensorRT flavour and version, GPU compute
capability) before any engine bytes reach `deserialize_cuda_engine`. Split builds (vision,
text, fusion engines) run as one model: each engine takes its inputs from the feed or from
the engines before it. A batch above the profile's max runs in chunks (validate feeds 32 at a
time; a kiosk engine is often built for 1..8); any other shape outside the profile is refused
with EngineShapeError (EF831) before it reaches TensorRT.

Written against the TensorRT 10 / TensorRT-RTX Python API (set_input_shape,
set_tensor_address, execute_async_v3); device memory through edgefuse.runtime.engines.cuda.
Not run on the project's machines: see docs/hardware.md.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgefuse.errors import EngineError
from edgefuse.runtime.engines.manifest import read_engine_manifest, verify_for_this_machine
from edgefuse.runtime.engines.profiles import check_in_profile
from edgefuse.runtime.runners import Runner, TensorSpec

log = logging.getLogger(__name__)


class _Engine:
    """One deserialized engine with its context, stream-side buffers and manifest entry."""

    def __init__(self, trt: Any, runtime: Any, entry: dict[str, Any], blob: bytes, runtime_cache: Path | None = None) -> None:
        from edgefuse.runtime.engines.flavours import capture

        self.entry = entry
        self.name = str(entry["name"])
        with capture(trt) as cap:
            if hasattr(runtime, "get_engine_validity"):  # TensorRT-RTX: ask before deserializing
                validity, diag = runtime.get_engine_validity(blob)
                if getattr(validity, "name", str(validity)) == "INVALID":
                    reasons = [k for k, v in trt.EngineInvalidityDiagnostics.__members__.items() if int(diag) & int(v)]
                    raise EngineError(f"{trt.__name__} reports engine {self.name} invalid on this machine: "
                                      f"{', '.join(reasons) or int(diag)}", "rebuild the engine for this GPU and driver", code="EF827")
            self.engine = runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            errs = cap.errors()
            raise EngineError(f"could not deserialize engine {self.name}: {errs[0] if errs else 'unknown error'}",
                              "rebuild the engine on this machine with `edgefuse build`", code="EF827")
        self.runtime_cache_path = runtime_cache
        self.runtime_cache: Any = None
        if runtime_cache is not None and hasattr(self.engine, "create_runtime_config"):
            # TensorRT-RTX compiles kernels for the GPU on first use; its runtime cache keeps them across runs
            rc = self.engine.create_runtime_config()
            self.runtime_cache = rc.create_runtime_cache()
            if runtime_cache.is_file():
                self.runtime_cache.deserialize(runtime_cache.read_bytes())
            rc.set_runtime_cache(self.runtime_cache)
            self.context = self.engine.create_execution_context(rc)
        else:
            self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineError(f"could not create an execution context for {self.name}", "check free GPU memory", code="EF828")
        self.trt = trt
        io = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in io if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in io if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        want_in = [s["name"] for s in entry["inputs"]]
        if sorted(want_in) != sorted(self.inputs):
            raise EngineError(f"engine {self.name} inputs {self.inputs} differ from its manifest {want_in}", "rebuild the engine",
                              code="EF829")
        self.buffers: dict[str, Any] = {}

    def run(self, values: dict[str, np.ndarray], stream: Any) -> dict[str, np.ndarray]:
        from edgefuse.runtime.engines import cuda

        feed = {n: values[n] for n in self.inputs}
        check_in_profile({n: a.shape for n, a in feed.items()}, self.entry["profile_shapes"], engine=self.name)
        for name, arr in feed.items():
            want = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))
            arr = np.ascontiguousarray(arr if arr.dtype == want else arr.astype(want))
            feed[name] = arr
            if not self.context.set_input_shape(name, tuple(arr.shape)):
                raise EngineError(f"engine {self.name} refused shape {list(arr.shape)} for '{name}'", "check the engine profile",
                                  code="EF831")
            buf = self.buffers.setdefault(name, cuda.DeviceBuffer())
            ptr = buf.ensure(arr.nbytes)
            stream.h2d(ptr, arr)
            self.context.set_tensor_address(name, ptr)
        results = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))
            host = np.empty(shape, dtype)
            buf = self.buffers.setdefault(name, cuda.DeviceBuffer())
            self.context.set_tensor_address(name, buf.ensure(host.nbytes))
            results[name] = host
        if not self.context.execute_async_v3(stream.ptr):
            raise EngineError(f"engine {self.name} failed to execute", "run with -v to see the TensorRT log", code="EF830")
        for name, host in results.items():
            stream.d2h(host, self.buffers[name].ptr.value)
        stream.sync()
        return results

    def free(self) -> None:
        if self.runtime_cache is not None and self.runtime_cache_path is not None:
            from edgefuse.artifacts import atomic_write_bytes

            try:
                atomic_write_bytes(self.runtime_cache_path, bytes(self.runtime_cache.serialize()))
            except Exception as e:  # noqa: BLE001 - a cache that cannot be saved only costs compile time next run
                log.warning("could not save the runtime cache %s: %s", self.runtime_cache_path, e)
        for b in self.buffers.values():
            b.free()
        self.buffers.clear()
        self.context = None
        self.engine = None


class EngineRunner(Runner):
    """Runner over an engine folder written by `edgefuse build` (one engine, or a split set)."""

    def __init__(self, path: str | os.PathLike[str], device: int = 0, runtime_cache: str | os.PathLike[str] | None = None,
                 chunk_batches: bool = True) -> None:
        """`runtime_cache`: TensorRT-RTX kernel cache file, loaded on activate and saved on deactivate.
        `chunk_batches`: run batches above the profile's max in chunks (False: refuse them, EF831)."""
        super().__init__()
        self.chunk_batches = chunk_batches
        self.folder, self.manifest = read_engine_manifest(Path(path))
        self.device = device
        self.runtime_cache = Path(runtime_cache) if runtime_cache is not None else None
        self.name = f"{self.manifest['flavour']}:{self.folder.name}"
        entries = list(self.manifest["engines"])
        if self.manifest.get("split") or len(entries) == 1:
            self.entries = entries  # one engine, or vision/text/fusion run as one model
            self.inputs = list(self.manifest["inputs"])
            self.outputs = list(self.manifest["outputs"])
        else:  # independent engines (captioning: image_encoder + decoder): open one of them by file
            p = Path(path)
            chosen = [e for e in entries if p.is_file() and e["file"] == p.name]
            if not chosen:
                raise EngineError(f"{self.folder} holds {len(entries)} independent engines",
                                  f"open one of them: {', '.join(str(self.folder / e['file']) for e in entries)}", code="EF833")
            self.entries = chosen
            self.inputs = list(chosen[0]["inputs"])
            self.outputs = list(chosen[0]["outputs"])
            self.name = f"{self.manifest['flavour']}:{self.folder.name}/{chosen[0]['file']}"
        self._engines: list[_Engine] = []
        self._stream: Any = None
        self._runtime: Any = None

    @property
    def profile_shapes(self) -> dict[str, dict[str, list[int]]]:
        """Model-level input profile (min/opt/max per input), from the manifest."""
        out: dict[str, dict[str, list[int]]] = {}
        model_inputs = {s["name"] for s in self.inputs}
        for e in self.entries:
            for k, v in e["profile_shapes"].items():
                if k in model_inputs:
                    out[k] = v
        return out

    @property
    def max_batch(self) -> int | None:
        """Largest batch the profile takes, when every input and output has `batch` first (else None)."""
        specs = [*self.inputs, *self.outputs]
        if not specs or any(not s.get("shape") or s["shape"][0] != "batch" for s in specs):
            return None
        prof = self.profile_shapes
        return min(prof[s["name"]]["max"][0] for s in self.inputs if s["name"] in prof) if prof else None

    def check_shapes(self, feed: dict[str, np.ndarray]) -> None:
        """Refuse a feed outside the engine profile (EngineShapeError), without a GPU.

        With `chunk_batches`, a batch above the profile's max is fine: infer runs it in chunks.
        """
        limit = self.max_batch if self.chunk_batches else None
        shapes = {k: tuple(np.shape(v)) for k, v in feed.items()}
        if limit:
            shapes = {k: (min(s[0], limit), *s[1:]) if s else s for k, s in shapes.items()}
        check_in_profile(shapes, self.profile_shapes, engine=self.name)

    def _activate(self) -> None:
        from edgefuse.runtime.engines import cuda
        from edgefuse.runtime.engines.flavours import get_logger

        trt, blobs = verify_for_this_machine(self.folder, self.manifest, self.device, self.entries)
        self._runtime = trt.Runtime(get_logger(trt))
        self._stream = cuda.Stream()
        try:
            self._engines = []
            for e in self.entries:
                cache = None
                if self.runtime_cache is not None:
                    cache = self.runtime_cache if len(self.entries) == 1 else \
                        self.runtime_cache.with_name(f"{self.runtime_cache.stem}.{e['name']}{self.runtime_cache.suffix}")
                self._engines.append(_Engine(trt, self._runtime, e, blobs[str(e["name"])], cache))
        except BaseException:
            self._deactivate()
            raise
        self._input_specs = [TensorSpec.from_dict(s) for s in self.inputs]
        self._output_names = [str(s["name"]) for s in self.outputs]
        log.info("activated %s: %s", self.name, ", ".join(e.name for e in self._engines))

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check_shapes(feed)
        limit = self.max_batch if self.chunk_batches else None
        n = next(iter(feed.values())).shape[0] if feed else 0
        if limit and n > limit:  # e.g. validate's batches of 32 on an engine built for 1..8
            parts = [self._infer_one({k: v[i:i + limit] for k, v in feed.items()}) for i in range(0, n, limit)]
            return {k: np.concatenate([p[k] for p in parts]) for k in self._output_names}
        return self._infer_one(feed)

    def _infer_one(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values: dict[str, np.ndarray] = dict(feed)
        for eng in self._engines:
            values.update(eng.run(values, self._stream))
        return {n: values[n] for n in self._output_names}

    def _deactivate(self) -> None:
        for e in self._engines:
            e.free()
        self._engines = []
        if self._stream is not None:
            self._stream.destroy()
        self._stream = None
        self._runtime = None


def open_engine_runner(path: str | os.PathLike[str], device: int = 0, runtime_cache: str | os.PathLike[str] | None = None,
                       chunk_batches: bool = True, **options: Any) -> EngineRunner:
    """Factory used by edgefuse.runtime.runners.open_runner for engine folders and files."""
    ignored = {k: options.pop(k) for k in ("provider", "threads", "optimization") if k in options}
    if ignored:  # ONNX Runtime settings that callers pass to any runner; an engine has none of them
        log.debug("engine runner ignores %s", ", ".join(ignored))
    unknown = sorted(options)
    if unknown:
        raise EngineError(f"engine runner does not take option(s) {', '.join(unknown)}", "options: device, runtime_cache, chunk_batches",
                          code="EF832")
    return EngineRunner(path, device=device, runtime_cache=runtime_cache, chunk_batches=chunk_batches)
