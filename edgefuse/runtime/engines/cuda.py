"""A minimal CUDA runtime binding through ctypes: device query, memory, streams.

Why ctypes: the engine runner must stay torch-free and not pull in cuda-python; libcudart
is present wherever TensorRT runs (JetPack, the CUDA toolkit, or the nvidia-cuda-runtime
wheel). Only what the runner needs: device count and compute capability, malloc/free,
host<->device copies on a stream, stream create/sync/destroy.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import subprocess
import sys
from functools import lru_cache

import numpy as np

from edgefuse.errors import EngineError

_MEMCPY_H2D = 1
_MEMCPY_D2H = 2
_ATTR_CC_MAJOR = 75
_ATTR_CC_MINOR = 76


def _candidates() -> list[str]:
    names = ["libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"]
    found = ctypes.util.find_library("cudart")
    out = [found] if found else []
    out += names
    # pip wheels (nvidia-cuda-runtime-cu12 / cu13, or torch's bundled copies)
    for base in sys.path:
        out += sorted(glob.glob(os.path.join(base, "nvidia", "cuda_runtime", "lib", "libcudart.so*")))
        out += sorted(glob.glob(os.path.join(base, "nvidia", "cu13", "lib", "libcudart.so*")))
    out += sorted(glob.glob("/usr/local/cuda*/lib64/libcudart.so*"))
    return out


@lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    errors = []
    for name in _candidates():
        try:
            return ctypes.CDLL(name)
        except OSError as e:
            errors.append(str(e))
    raise EngineError("no CUDA runtime library (libcudart) found on this machine",
                      "engines need an NVIDIA GPU with its driver and CUDA runtime; install the CUDA toolkit or "
                      "`pip install nvidia-cuda-runtime-cu12`", code="EF840")


def _check(rc: int, what: str) -> None:
    if rc != 0:
        lib = _lib()
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        msg = lib.cudaGetErrorString(rc).decode(errors="replace")
        raise EngineError(f"CUDA {what} failed: {msg} ({rc})", "check the GPU, its driver and free memory (nvidia-smi)", code="EF841")


def device_count() -> int:
    """Number of CUDA devices; 0 when there is no driver or runtime."""
    try:
        lib = _lib()
    except EngineError:
        return 0
    n = ctypes.c_int(0)
    return n.value if lib.cudaGetDeviceCount(ctypes.byref(n)) == 0 else 0


def compute_capability(device: int = 0) -> str:
    """'major.minor' of a CUDA device (cudart), falling back to nvidia-smi."""
    try:
        lib = _lib()
        major, minor = ctypes.c_int(), ctypes.c_int()
        _check(lib.cudaDeviceGetAttribute(ctypes.byref(major), _ATTR_CC_MAJOR, device), "cudaDeviceGetAttribute")
        _check(lib.cudaDeviceGetAttribute(ctypes.byref(minor), _ATTR_CC_MINOR, device), "cudaDeviceGetAttribute")
        return f"{major.value}.{minor.value}"
    except EngineError:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader", f"--id={device}"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        raise EngineError("no CUDA GPU found on this machine", "engines run on an NVIDIA GPU (see docs/hardware.md)", code="EF842") from e
    if not out:
        raise EngineError("no CUDA GPU found on this machine", "engines run on an NVIDIA GPU (see docs/hardware.md)", code="EF842")
    return out.splitlines()[0].strip()


def runtime_version() -> str | None:
    """CUDA runtime version as 'major.minor', or None without a runtime."""
    try:
        lib = _lib()
    except EngineError:
        return None
    v = ctypes.c_int(0)
    if lib.cudaRuntimeGetVersion(ctypes.byref(v)) != 0:
        return None
    return f"{v.value // 1000}.{(v.value % 1000) // 10}"


class DeviceBuffer:
    """One device allocation, grown on demand (engines reuse buffers across calls)."""

    def __init__(self) -> None:
        self.ptr = ctypes.c_void_p(0)
        self.nbytes = 0

    def ensure(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.free()
            lib = _lib()
            _check(lib.cudaMalloc(ctypes.byref(self.ptr), ctypes.c_size_t(max(nbytes, 1))), f"cudaMalloc({nbytes})")
            self.nbytes = nbytes
        return int(self.ptr.value or 0)

    def free(self) -> None:
        if self.ptr.value:
            _lib().cudaFree(self.ptr)
        self.ptr = ctypes.c_void_p(0)
        self.nbytes = 0


class Stream:
    """A CUDA stream with async host<->device copies; `sync()` waits for all work on it."""

    def __init__(self) -> None:
        self.handle = ctypes.c_void_p(0)
        _check(_lib().cudaStreamCreate(ctypes.byref(self.handle)), "cudaStreamCreate")

    @property
    def ptr(self) -> int:
        return int(self.handle.value or 0)

    def h2d(self, dst: int, src: np.ndarray) -> None:
        lib = _lib()
        _check(lib.cudaMemcpyAsync(ctypes.c_void_p(dst), src.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(src.nbytes),
                                   _MEMCPY_H2D, self.handle), "cudaMemcpyAsync H2D")

    def d2h(self, dst: np.ndarray, src: int) -> None:
        lib = _lib()
        _check(lib.cudaMemcpyAsync(dst.ctypes.data_as(ctypes.c_void_p), ctypes.c_void_p(src), ctypes.c_size_t(dst.nbytes),
                                   _MEMCPY_D2H, self.handle), "cudaMemcpyAsync D2H")

    def sync(self) -> None:
        _check(_lib().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def destroy(self) -> None:
        if self.handle.value:
            _lib().cudaStreamDestroy(self.handle)
        self.handle = ctypes.c_void_p(0)
