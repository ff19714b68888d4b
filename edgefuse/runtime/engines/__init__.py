"""TensorRT and TensorRT-RTX engines: build from ONNX per target, manifests, the engine runner.

Submodules: flavours (which TensorRT a target needs), profiles (min/opt/max shapes), build
(`build_engines`), split (vision/text/fusion parts), manifest (checks before deserializing),
runner (`EngineRunner`), cuda (ctypes CUDA runtime), probe (a tiny fusion graph for checks).
Nothing heavy is imported until used: tensorrt, onnx and onnxruntime load lazily.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "build_engines": "edgefuse.runtime.engines.build",
    "BuildResult": "edgefuse.runtime.engines.build",
    "EngineRunner": "edgefuse.runtime.engines.runner",
    "open_engine_runner": "edgefuse.runtime.engines.runner",
    "read_engine_manifest": "edgefuse.runtime.engines.manifest",
    "FLAVOURS": "edgefuse.runtime.engines.flavours",
    "get_flavour": "edgefuse.runtime.engines.flavours",
    "EngineShapeError": "edgefuse.runtime.engines.profiles",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgefuse.runtime.engines' has no attribute '{name}'")
