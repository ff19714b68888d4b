"""The engine runner on a real GPU: skipped where the hardware is missing (docs/hardware.md).

- test_cuda_*: the ctypes CUDA runtime binding the runner uses for device memory; needs any
  NVIDIA GPU (ran on the lent H100, see docs/hardware.md).
- test_engine_runner_matches_onnx: builds a TensorRT-RTX engine for this GPU and runs it
  against ONNX Runtime; needs TensorRT-RTX and compute capability 8.0/8.6/8.9/12.x
  (no machine here has one, so it is skipped on all of them).
- test_rtx_engine_refused_on_unsupported_gpu: on a GPU TensorRT-RTX does not support (the
  H100/H200, 9.0) the runner refuses before deserializing.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from edgefuse.runtime.engines import cuda

HAS_GPU = cuda.device_count() > 0
HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
RTX_CCS = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
GPU_CC = cuda.compute_capability() if HAS_GPU else None

needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")


@pytest.mark.gpu
@needs_gpu
def test_cuda_compute_capability_and_runtime() -> None:
    major, minor = GPU_CC.split(".")
    assert int(major) >= 5 and minor.isdigit()
    assert cuda.runtime_version() is not None


@pytest.mark.gpu
@needs_gpu
def test_cuda_round_trip_through_device_memory() -> None:
    stream = cuda.Stream()
    buf = cuda.DeviceBuffer()
    try:
        x = np.arange(4096, dtype=np.float32).reshape(64, 64)
        y = np.zeros_like(x)
        stream.h2d(buf.ensure(x.nbytes), x)
        stream.d2h(y, buf.ptr.value)
        stream.sync()
        np.testing.assert_array_equal(x, y)
        small = buf.ensure(16)  # big enough already: same allocation
        assert small == buf.ptr.value and buf.nbytes == x.nbytes
    finally:
        buf.free()
        stream.destroy()


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(not (HAS_GPU and HAS_RTX and GPU_CC in RTX_CCS),
                    reason="needs TensorRT-RTX and a GPU of compute capability 7.5/8.x/12.x")
def test_engine_runner_matches_onnx(tmp_path) -> None:
    from edgefuse.config import parse_config
    from edgefuse.runtime.engines.build import build_engines
    from edgefuse.runtime.engines.probe import probe_feed, write_probe_artifact
    from edgefuse.runtime.engines.profiles import EngineShapeError
    from edgefuse.runtime.runners import open_runner

    art = write_probe_artifact(tmp_path / "probe", "fp16")
    cfg = parse_config({"targets": {"here": {"flavour": "tensorrt-rtx", "compute_capability": [GPU_CC],
                                             "profiles": {"batch": {"min": 1, "opt": 2, "max": 4},
                                                          "text_length": {"min": 4, "opt": 8, "max": 16}}}}})
    res = build_engines(art, "here", cfg, out=tmp_path / "engine")
    cache = tmp_path / "rtx.runtime-cache"
    with open_runner(art) as ref, open_runner(res.folder, runtime_cache=cache) as eng:
        for batch, length in ((1, 4), (3, 11), (4, 16), (9, 8)):  # 9 > max batch 4: run in chunks
            feed = probe_feed(batch, length)
            a, b = ref.infer(feed)["vqa_logits"], eng.infer(feed)["vqa_logits"]
            assert b.shape == a.shape
            cos = float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
            assert cos > 0.999
        with pytest.raises(EngineShapeError):
            eng.infer(probe_feed(2, 17))  # text longer than the profile's max
    assert cache.stat().st_size > 0  # compiled kernels kept for the next activation


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(not (HAS_GPU and HAS_RTX and GPU_CC not in RTX_CCS),
                    reason="needs TensorRT-RTX on a GPU it does not support (e.g. H100/H200)")
def test_rtx_engine_refused_on_unsupported_gpu(tmp_path) -> None:
    from edgefuse.config import parse_config
    from edgefuse.errors import EngineError
    from edgefuse.runtime.engines.build import build_engines
    from edgefuse.runtime.engines.probe import write_probe_artifact
    from edgefuse.runtime.engines.runner import EngineRunner

    art = write_probe_artifact(tmp_path / "probe", "fp16")
    res = build_engines(art, "desktop-rtx", parse_config({}), out=tmp_path / "engine")
    with pytest.raises(EngineError) as e:
        EngineRunner(res.folder).activate()
    assert e.value.code == "EF822" and GPU_CC in e.value.message
