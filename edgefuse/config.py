"""Schema of edge_config.yaml: typed, validated, versioned.

Each section is a dataclass; unknown keys are refused with a near-miss suggestion, and
wrong types name the key. `load_config()` with no path gives the built-in defaults.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgefuse.errors import ConfigError, suggest

CONFIG_VERSION = 1
DEFAULT_CONFIG_NAME = "edge_config.yaml"


@dataclass
class ModelConfig:
    name: str = "museum-dual"  # zoo name, or package.module:factory for bring-your-own
    weights: str | None = None  # safetensors path; None = the shipped trained weights


@dataclass
class ExportConfig:
    opset: int = 18
    output_dir: str = "artifacts"
    verify: bool = True


@dataclass
class CalibrationConfig:
    source: str = "museum"  # "museum" or a folder of images + annotations.jsonl
    num_samples: int = 256
    seed: int = 0
    cache_dir: str = ".edgefuse-cache"


@dataclass
class QuantizeConfig:
    precisions: list[str] = field(default_factory=lambda: ["fp16", "int8"])
    backend: str = "ort"  # ort | nncf
    calibration_method: str = "minmax"  # minmax | entropy | percentile
    budget_metric: str | None = "vqa_accuracy"
    budget_max_drop: float | None = 0.5  # percentage points


@dataclass
class ProfileShape:
    min: int
    opt: int
    max: int


@dataclass
class TargetConfig:
    flavour: str  # tensorrt-10 | tensorrt-11 | tensorrt-rtx | onnxruntime-cpu | onnxruntime-cuda
    compute_capability: list[str] = field(default_factory=list)
    dla_core: int | None = None
    gpu_fallback: bool = True
    workspace_mb: int | None = None
    optimization_level: int = 3
    strongly_typed: bool = True
    split_engines: bool = False
    profiles: dict[str, ProfileShape] = field(default_factory=dict)  # dynamic axis name -> shapes


@dataclass
class GateConfig:
    metric: str
    max_drop: float | None = None  # absolute drop in the metric's unit (percentage points for accuracies)
    max_relative_drop: float | None = None  # fraction of the reference value
    min_value: float | None = None  # e.g. minimum agreement with the reference
    confidence: float | None = None  # e.g. 0.95: gate on the bootstrap upper bound of the drop


@dataclass
class RuntimeConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    provider: str = "cpu"  # cpu | cuda | tensorrt
    max_upload_mb: float = 8.0
    max_image_pixels: int = 40_000_000
    max_question_chars: int = 200
    queue_size: int = 16
    deadline_ms: int = 5000
    max_batch: int = 8
    threads: int = 0  # 0 = ONNX Runtime default


def _default_targets() -> dict[str, TargetConfig]:
    dyn = {"batch": ProfileShape(1, 1, 8), "text_length": ProfileShape(4, 16, 32)}
    return {
        "x86-cpu": TargetConfig(flavour="onnxruntime-cpu"),
        "desktop-rtx": TargetConfig(flavour="tensorrt-rtx", compute_capability=["8.6", "8.9", "12.0"], profiles=dict(dyn)),
        "jetson-orin-jp6": TargetConfig(flavour="tensorrt-10", compute_capability=["8.7"], workspace_mb=2048,
                                        strongly_typed=False, profiles=dict(dyn)),
        "jetson-orin-jp7": TargetConfig(flavour="tensorrt-11", compute_capability=["8.7"], workspace_mb=2048, profiles=dict(dyn)),
        "jetson-thor": TargetConfig(flavour="tensorrt-11", compute_capability=["11.0"], profiles=dict(dyn)),
        "datacenter": TargetConfig(flavour="tensorrt-10", compute_capability=["8.0", "9.0", "10.0"], profiles=dict(dyn)),
    }


def _default_gates() -> list[GateConfig]:
    return [
        GateConfig(metric="vqa_accuracy", max_drop=1.0),
        GateConfig(metric="vqa_agreement", min_value=0.95),
        GateConfig(metric="itm_accuracy", max_drop=1.0),
        GateConfig(metric="grounding_miou", max_drop=2.0),
    ]


@dataclass
class EdgeConfig:
    version: int = CONFIG_VERSION
    model: ModelConfig = field(default_factory=ModelConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    targets: dict[str, TargetConfig] = field(default_factory=_default_targets)
    gates: list[GateConfig] = field(default_factory=_default_gates)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def target(self, name: str) -> TargetConfig:
        if name not in self.targets:
            from edgefuse.errors import TargetError

            raise TargetError(f"unknown target '{name}'", suggest(name, self.targets), code="EF811")
        return self.targets[name]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type, or raise ConfigError naming `where`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, where)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if errors else ConfigError(f"{where}: bad value {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}", "write it as a YAML list", code="EF102")
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}", "write it as a YAML mapping", code="EF102")
        return {str(k): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}", "write it as a YAML mapping", code="EF102")
        return _build(tp, value, where)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}", "fix the value's type", code="EF102")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown key '{where + '.' if where else ''}{key}'", suggest(str(key), names), code="EF101")
    kwargs = {k: _convert(hints[k], v, f"{where + '.' if where else ''}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or 'config'}: {e}", "add the missing keys", code="EF103") from e


def _validate(cfg: EdgeConfig) -> None:
    if cfg.version != CONFIG_VERSION:
        raise ConfigError(f"config version {cfg.version} is not supported", f"this edgefuse reads version {CONFIG_VERSION}", code="EF104")
    for p in cfg.quantize.precisions:
        if p not in ("fp32", "fp16", "int8"):
            raise ConfigError(f"unknown precision '{p}'", suggest(p, ["fp32", "fp16", "int8"]), code="EF105")
    if cfg.quantize.backend not in ("ort", "nncf"):
        raise ConfigError(f"unknown quantize backend '{cfg.quantize.backend}'", suggest(cfg.quantize.backend, ["ort", "nncf"]), code="EF105")
    if cfg.quantize.calibration_method not in ("minmax", "entropy", "percentile"):
        raise ConfigError(f"unknown calibration method '{cfg.quantize.calibration_method}'",
                          suggest(cfg.quantize.calibration_method, ["minmax", "entropy", "percentile"]), code="EF105")
    if cfg.calibration.num_samples < 1:
        raise ConfigError("calibration.num_samples must be >= 1", "use a few hundred pairs", code="EF106")
    for name, t in cfg.targets.items():
        for axis, s in t.profiles.items():
            if not (1 <= s.min <= s.opt <= s.max):
                raise ConfigError(f"target {name}: profile {axis} needs 1 <= min <= opt <= max, got {s.min}/{s.opt}/{s.max}",
                                  "fix the profile shapes", code="EF107")
    for g in cfg.gates:
        if g.max_drop is None and g.max_relative_drop is None and g.min_value is None:
            raise ConfigError(f"gate on '{g.metric}' sets no limit", "set max_drop, max_relative_drop or min_value", code="EF108")
    if not (0 < cfg.runtime.port < 65536):
        raise ConfigError(f"runtime.port {cfg.runtime.port} is out of range", "use 1..65535", code="EF106")


def parse_config(data: dict[str, Any] | None) -> EdgeConfig:
    """Build and validate an EdgeConfig from a plain mapping (sections missing = defaults)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("config must be a YAML mapping", "see edge_config.yaml in the repository", code="EF102")
    cfg = _build(EdgeConfig, data, "")
    _validate(cfg)
    return cfg


def load_config(path: str | Path | None = None) -> EdgeConfig:
    """Load edge_config.yaml. None: ./edge_config.yaml if present, else the defaults."""
    if path is None:
        p = Path(DEFAULT_CONFIG_NAME)
        if not p.exists():
            return parse_config({})
    else:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} not found", "pass --config with an existing edge_config.yaml", code="EF109")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {str(e).splitlines()[0]}", "check indentation and colons", code="EF110") from e
    return parse_config(data)
