"""Bring your own model: `package.module:factory` -> (nn.Module, ExportSpec[, assets]).

The factory takes no arguments and returns the module to export and its ExportSpec; an
optional third item maps artifact file names to what to write there ("tokenizer.json": a
path or a Tokenizer, "answers.json": a list of answers) so the artifact is self-contained
for the torch-free runtime. Every way this can go wrong is one line naming the factory.
"""

from __future__ import annotations

import importlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefuse.errors import ExportError
from edgefuse.export.spec import ExportSpec

FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@dataclass
class FactoryResult:
    """What a factory gave: the module, its spec and optional artifact assets."""

    ref: str
    module: Any
    spec: ExportSpec
    assets: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.ref.rpartition(":")[2].replace(".", "-")


def is_factory_ref(model: str) -> bool:
    return ":" in model and not Path(model).exists()


def _call_factory(ref: str, module_name: str, attr: str) -> Any:
    try:
        mod = importlib.import_module(module_name)
    except ImportError as e:
        raise ExportError(f"cannot import '{module_name}' for factory '{ref}': {e}",
                          "check the module path and that its package is installed or in the working directory",
                          code="EF431") from e
    except Exception as e:
        raise ExportError(f"importing '{module_name}' raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                          "fix the module so it imports cleanly", code="EF431") from e
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ExportError(f"'{module_name}' has no attribute '{attr}'", "name a function that returns (nn.Module, ExportSpec)",
                              code="EF432")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ExportError(f"'{ref}' is not callable", "name a function that returns (nn.Module, ExportSpec)", code="EF432")
    try:
        return obj()
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"factory '{ref}' raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                          "run the factory in Python to see the traceback", code="EF434") from e


def load_factory(ref: str, search_path: str | Path | None = ".") -> FactoryResult:
    """Import `package.module:factory`, call it, check what it returns."""
    from torch import nn

    if not FACTORY_RE.match(ref):
        raise ExportError(f"'{ref}' is not of the form package.module:factory", "e.g. examples.byo_model.model:build", code="EF430")
    module_name, _, attr = ref.partition(":")
    added = False
    if search_path is not None and str(Path(search_path).resolve()) not in [str(Path(p).resolve()) for p in sys.path if p]:
        sys.path.insert(0, str(Path(search_path).resolve()))  # like `python -m`: the working directory imports
        added = True
    try:  # the path stays while the factory runs: it may import more modules lazily
        out = _call_factory(ref, module_name, attr)
    finally:
        if added:
            sys.path.remove(str(Path(search_path).resolve()))
    if not isinstance(out, tuple) or len(out) not in (2, 3):
        raise ExportError(f"factory '{ref}' returned {type(out).__name__}, expected (nn.Module, ExportSpec)",
                          "return a tuple: (model, spec) or (model, spec, assets)", code="EF433")
    module, spec, *rest = out
    if not isinstance(module, nn.Module):
        raise ExportError(f"factory '{ref}' returned {type(module).__name__} as the model, expected torch.nn.Module",
                          "return (model, spec)", code="EF433")
    if not isinstance(spec, ExportSpec):
        raise ExportError(f"factory '{ref}' returned {type(spec).__name__} as the spec, expected edgefuse.export.ExportSpec",
                          "build one with edgefuse.export.spec.image_text_spec or ExportSpec(...)", code="EF433")
    assets = rest[0] if rest else {}
    if not isinstance(assets, dict):
        raise ExportError(f"factory '{ref}' returned {type(assets).__name__} as assets, expected a dict",
                          "map artifact file names to paths or values", code="EF433")
    return FactoryResult(ref, module.eval(), spec, dict(assets))
