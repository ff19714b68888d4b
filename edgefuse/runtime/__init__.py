"""Torch-free runtime: runners over ONNX Runtime (and TensorRT engines), the kiosk pipeline, the web kiosk.

Nothing here imports torch: a kiosk PC installs numpy, Pillow, tokenizers and an ONNX Runtime
(or TensorRT) build. Heavy modules (onnxruntime, fastapi) load lazily on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Runner", "OrtRunner", "TensorSpec", "open_runner", "KioskPipeline", "Answer"]

_LAZY = {
    "Runner": "edgefuse.runtime.runners",
    "OrtRunner": "edgefuse.runtime.runners",
    "TensorSpec": "edgefuse.runtime.runners",
    "open_runner": "edgefuse.runtime.runners",
    "KioskPipeline": "edgefuse.runtime.kiosk",
    "Answer": "edgefuse.runtime.kiosk",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgefuse.runtime' has no attribute '{name}'")
