"""One typed, versioned, JSON-serialisable config per quantization recipe (torchao style).

`config_to_dict` / `config_from_dict` round-trip through plain JSON; an unknown key, a wrong
version or an unknown recipe type is a typed QuantizeError, never a silent default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from edgefuse.errors import QuantizeError, suggest

METHODS = ("minmax", "entropy", "percentile")
BACKENDS = ("ort", "nncf")


@dataclass
class Fp16Config:
    """FP16 weights and activations; graph inputs/outputs stay FP32.

    Nodes stay FP32 where calibration shows risk (ModelOpt AutoCast spirit): an input or output
    magnitude above `data_max`, a weight above `init_max`, or a reduction deeper than
    `max_reduction_depth` elements; plus `keep_nodes` named by the user.
    """

    TYPE: ClassVar[str] = "fp16"
    VERSION: ClassVar[int] = 1
    data_max: float = 512.0
    init_max: float = 65504.0
    max_reduction_depth: int = 4096
    keep_ops: list[str] = field(default_factory=list)
    keep_nodes: list[str] = field(default_factory=list)

    @property
    def precision(self) -> str:
        return "fp16"


@dataclass
class _Int8Base:
    """Explicit INT8 QDQ following TensorRT's rules.

    Symmetric INT8, per-channel weights, per-tensor activations, Q/DQ only on the inputs of
    MatMul/Gemm/Conv. Transformer-aware defaults keep the attention-score MatMuls, the final
    head layers and the embedding table in FP32 (residual adds, LayerNorm, Softmax and the box
    sigmoid carry no Q/DQ at all); `quantize_*` flags or `include_nodes` override them.
    `entropy` is ORT's KL threshold search over `num_bins` (pure Python: slow on big models);
    `percentile` clips at `percentile` of |x|.
    """

    method: str = "minmax"
    percentile: float = 99.999
    num_bins: int = 2048
    per_channel: bool = True  # TensorRT; ORT's CPU EP fuses only per-tensor weights into integer MatMuls
    reduce_range: bool = False  # 7-bit weights: for x86 CPUs without VNNI (NOTES.md)
    quantize_attention: bool = False
    quantize_head: bool = False
    quantize_embedding: bool = False
    exclude_nodes: list[str] = field(default_factory=list)
    include_nodes: list[str] = field(default_factory=list)
    promote_min_sqnr: float | None = None  # lower kept groups whose measured SQNR alone is >= this (dB)

    @property
    def precision(self) -> str:
        return "int8"

    def check(self) -> None:
        if self.method not in METHODS:
            raise QuantizeError(f"unknown calibration method '{self.method}'", suggest(self.method, METHODS), code="EF512")
        if not (50.0 < self.percentile <= 100.0):
            raise QuantizeError(f"percentile {self.percentile} out of range", "use e.g. 99.99 or 99.999", code="EF512")


@dataclass
class Int8OrtConfig(_Int8Base):
    """INT8 QDQ produced with ONNX Runtime's quantization tools."""

    TYPE: ClassVar[str] = "int8-ort"
    VERSION: ClassVar[int] = 1


@dataclass
class Int8NncfConfig(_Int8Base):
    """INT8 QDQ produced with NNCF (ModelType.TRANSFORMER, symmetric preset)."""

    TYPE: ClassVar[str] = "int8-nncf"
    VERSION: ClassVar[int] = 1
    fast_bias_correction: bool = True

    def check(self) -> None:
        super().check()
        if self.method == "entropy":
            raise QuantizeError("NNCF has no entropy (KL) calibration", "use --method minmax or percentile with --backend nncf, or --backend ort",
                                code="EF512")


QuantConfig = Fp16Config | Int8OrtConfig | Int8NncfConfig
CONFIG_TYPES: dict[str, type] = {c.TYPE: c for c in (Fp16Config, Int8OrtConfig, Int8NncfConfig)}


def config_to_dict(cfg: QuantConfig) -> dict[str, Any]:
    return {"type": cfg.TYPE, "version": cfg.VERSION, **dataclasses.asdict(cfg)}


def config_from_dict(data: dict[str, Any]) -> QuantConfig:
    data = dict(data)
    kind = data.pop("type", None)
    version = data.pop("version", None)
    if kind not in CONFIG_TYPES:
        raise QuantizeError(f"unknown quantization recipe '{kind}'", suggest(str(kind), CONFIG_TYPES), code="EF513")
    cls = CONFIG_TYPES[kind]
    if version != cls.VERSION:
        raise QuantizeError(f"recipe '{kind}' version {version} is not supported", f"this edgefuse reads version {cls.VERSION}", code="EF513")
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            raise QuantizeError(f"unknown key '{k}' in recipe '{kind}'", suggest(k, names), code="EF513")
    cfg = cls(**data)
    if hasattr(cfg, "check"):
        cfg.check()
    return cfg


def make_config(precision: str, backend: str = "ort", method: str = "minmax", **overrides: Any) -> QuantConfig:
    """The recipe for a CLI-style request (precision, backend, method)."""
    if precision == "fp16":
        return Fp16Config(**overrides)
    if precision != "int8":
        raise QuantizeError(f"unknown precision '{precision}'", suggest(precision, ["fp16", "int8"]), code="EF514")
    if backend not in BACKENDS:
        raise QuantizeError(f"unknown quantize backend '{backend}'", suggest(backend, BACKENDS), code="EF514")
    cls = Int8OrtConfig if backend == "ort" else Int8NncfConfig
    cfg = cls(method=method, **overrides)
    cfg.check()
    return cfg
