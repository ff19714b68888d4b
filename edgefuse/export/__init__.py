"""torch -> ONNX: ExportSpec per model family, export, verification, captioning generation.

Names are loaded lazily so `import edgefuse.export` stays light (torch loads only when an
export runs): `from edgefuse.export import export_model, ExportSpec, TensorSpec, Tolerance`.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "ExportSpec": "edgefuse.export.spec",
    "TensorSpec": "edgefuse.export.spec",
    "Tolerance": "edgefuse.export.spec",
    "AxisRange": "edgefuse.export.spec",
    "image_text_spec": "edgefuse.export.spec",
    "export_model": "edgefuse.export.exporter",
    "ExportResult": "edgefuse.export.exporter",
    "verify_onnx": "edgefuse.export.verify",
    "CaptionGenerator": "edgefuse.export.generation",
    "GenerationConfig": "edgefuse.export.generation",
    "inspect_artifact": "edgefuse.export.inspect",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'edgefuse.export' has no attribute '{name}'")
