"""Registry from recipe config type to the backend that prepares it (torchao style).

A backend returns a `Plan`: the quantizable groups (one per PyTorch module where the exporter
recorded scopes), which of them the recipe lowers by default and why the others stay in higher
precision, and a builder from a set of lowered groups to a model. Sensitivity analysis and the
accuracy budget only talk to the Plan, so they work the same for FP16 and both INT8 backends.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import onnx

from edgefuse.errors import QuantizeError

Builder = Callable[[Collection[str]], onnx.ModelProto]


@dataclass
class Plan:
    groups: dict[str, list[str]]  # group name -> node names
    default: list[str]  # groups lowered by the recipe's defaults
    kept: dict[str, list[str]]  # node -> reasons it stays in higher precision by default
    build: Builder  # lowered groups -> model (fast; used for sensitivity and the budget)
    eval_mode: str = "simulated"  # how to run candidates when measuring ("simulated" | "cpu")
    final_build: Builder | None = None  # the backend's own build, when it differs from `build`
    budget_step: str = "one"  # "one" group per budget step, or "double" (slow backends)
    details: dict[str, Any] = field(default_factory=dict)

    def nodes_of(self, groups: Collection[str]) -> list[str]:
        return sorted(n for g in groups for n in self.groups[g])


_REGISTRY: dict[type, Callable[..., Plan]] = {}


def register(config_type: type) -> Callable[[Callable[..., Plan]], Callable[..., Plan]]:
    def deco(fn: Callable[..., Plan]) -> Callable[..., Plan]:
        _REGISTRY[config_type] = fn
        return fn

    return deco


def backend_for(config: Any) -> Callable[..., Plan]:
    import edgefuse.quantize.backends  # noqa: F401  (registers the built-in backends)

    fn = _REGISTRY.get(type(config))
    if fn is None:
        raise QuantizeError(f"no backend registered for {type(config).__name__}", "use Fp16Config, Int8OrtConfig or Int8NncfConfig",
                            code="EF513")
    return fn
