"""TensorRT flavours: which Python module each target flavour needs, and a capturing logger.

Three generations build engines from ONNX here:
- `tensorrt-rtx` (TensorRT for RTX, module `tensorrt_rtx`): strongly typed only, builds
  ahead of time on a machine without a GPU for a list of compute capabilities; no timing
  cache (its timing-cache calls are no-ops), no DLA.
- `tensorrt-10` (JetPack 6, desktop/datacenter TensorRT 10.x, module `tensorrt`): weakly typed
  networks with FP16/INT8 builder flags, or strongly typed; timing cache; DLA on Jetson.
- `tensorrt-11` (JetPack 7 / Thor, module `tensorrt` 11.x): strongly typed only; timing cache.
TensorRT 10/11 build for the GPU they run on (a GPU is required to build).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from edgefuse.errors import TargetError, suggest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Flavour:
    name: str
    module: str
    major: int | None  # required major version of the module (None: any)
    package: str  # what to install
    strongly_typed_only: bool
    timing_cache: bool
    dla: bool
    builds_without_gpu: bool
    compute_capabilities: tuple[str, ...] | None  # CCs the builder can target by name (None: the build GPU's)


FLAVOURS: dict[str, Flavour] = {
    "tensorrt-rtx": Flavour("tensorrt-rtx", "tensorrt_rtx", None, "pip install 'edgefuse[tensorrt-rtx]' (tensorrt-rtx-cu13)",
                            strongly_typed_only=True, timing_cache=False, dla=False, builds_without_gpu=True,
                            compute_capabilities=("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")),
    "tensorrt-10": Flavour("tensorrt-10", "tensorrt", 10,
                           "TensorRT 10: on JetPack 6 `apt install python3-libnvinfer`; on x86 `pip install tensorrt-cu12==10.*`",
                           strongly_typed_only=False, timing_cache=True, dla=True, builds_without_gpu=False, compute_capabilities=None),
    "tensorrt-11": Flavour("tensorrt-11", "tensorrt", 11,
                           "TensorRT 11: on JetPack 7 `apt install python3-libnvinfer`; on x86 `pip install tensorrt-cu13==11.*`",
                           strongly_typed_only=True, timing_cache=True, dla=True, builds_without_gpu=False, compute_capabilities=None),
}

ENGINE_FLAVOURS = tuple(FLAVOURS)


def get_flavour(name: str) -> Flavour:
    """The Flavour for a target's `flavour` string; onnxruntime-* targets have no engine."""
    if name in FLAVOURS:
        return FLAVOURS[name]
    if name.startswith("onnxruntime"):
        raise TargetError(f"flavour '{name}' runs the ONNX artifact directly and builds no engine",
                          "use `edgefuse ask`/`validate` on the ONNX folder, or pick a TensorRT target", code="EF812")
    raise TargetError(f"unknown engine flavour '{name}'", suggest(name, FLAVOURS), code="EF812")


def import_trt(flavour: Flavour) -> ModuleType:
    """Import the flavour's TensorRT module, or a TargetError naming the package to install."""
    import importlib

    try:
        trt = importlib.import_module(flavour.module)
    except ImportError as e:  # also OSError-wrapped missing .so files surface as ImportError
        raise TargetError(f"target flavour '{flavour.name}' needs the Python module '{flavour.module}', which is not installed ({e.msg})",
                          flavour.package, code="EF813") from e
    except OSError as e:
        raise TargetError(f"'{flavour.module}' is installed but its libraries failed to load: {e}", flavour.package, code="EF813") from e
    version = str(getattr(trt, "__version__", "0"))
    if flavour.major is not None and int(version.split(".")[0]) != flavour.major:
        raise TargetError(f"target flavour '{flavour.name}' needs TensorRT {flavour.major}.x but '{flavour.module}' is {version}",
                          flavour.package, code="EF814")
    return trt


def library_version(trt: ModuleType) -> str:
    return str(getattr(trt, "__version__", "unknown"))


def cuda_major_of_build(flavour: Flavour) -> str | None:
    """CUDA major version the installed TensorRT build was made for (from its wheel name)."""
    from importlib import metadata

    names = {"tensorrt-rtx": ("tensorrt-rtx-cu13", "tensorrt-rtx-cu12"),
             "tensorrt-10": ("tensorrt-cu12", "tensorrt-cu11", "tensorrt-cu13"),
             "tensorrt-11": ("tensorrt-cu13", "tensorrt-cu12")}[flavour.name]
    for dist in names:
        for candidate in (dist, dist + "-libs", dist.replace("-", "_") + "_libs"):
            try:
                metadata.version(candidate)
            except metadata.PackageNotFoundError:
                continue
            return dist.rsplit("cu", 1)[1]
    return None


# --- logging ---------------------------------------------------------------------------------
# TensorRT keeps the first logger a process registers and ignores later ones (it warns so),
# so there is one logger per module, and callers capture its messages through `capture()`.

_LOGGERS: dict[str, Any] = {}
# Warnings that are advice already followed: the engine runner binds int64 inputs as int64.
_BENIGN = ("has Int64 binding",)
_LOCK = threading.Lock()


class _Capture:
    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def warnings(self) -> list[str]:
        return [m for s, m in self.messages if s in ("WARNING", "ERROR", "INTERNAL_ERROR")]

    def errors(self) -> list[str]:
        return [m for s, m in self.messages if s in ("ERROR", "INTERNAL_ERROR")]


def get_logger(trt: ModuleType) -> Any:
    """The process-wide TensorRT logger for this module; forwards to Python logging."""
    key = trt.__name__
    with _LOCK:
        if key in _LOGGERS:
            return _LOGGERS[key]

        class _Logger(trt.ILogger):  # type: ignore[misc,name-defined]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.captures: list[_Capture] = []

            def log(self, severity: Any, msg: str) -> None:
                sev = str(getattr(severity, "name", severity)).split(".")[-1]
                for c in self.captures:
                    c.messages.append((sev, msg))
                level = {"INTERNAL_ERROR": logging.ERROR, "ERROR": logging.ERROR, "WARNING": logging.WARNING,
                         "INFO": logging.DEBUG, "VERBOSE": 5}.get(sev, logging.DEBUG)
                if level == logging.WARNING and any(b in msg for b in _BENIGN):
                    level = logging.INFO
                log.log(level, "[%s] %s", key, msg)

        logger = _Logger()
        logger.min_severity = trt.ILogger.Severity.VERBOSE if log.isEnabledFor(5) else trt.ILogger.Severity.INFO
        _LOGGERS[key] = logger
        return logger


@contextmanager
def capture(trt: ModuleType) -> Iterator[_Capture]:
    """Collect every TensorRT message logged while the block runs (severity name, text)."""
    logger = get_logger(trt)
    c = _Capture()
    logger.captures.append(c)
    try:
        yield c
    finally:
        logger.captures.remove(c)
