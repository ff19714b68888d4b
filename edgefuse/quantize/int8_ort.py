"""INT8 QDQ with ONNX Runtime's quantization tools, split into calibrate and build.

Calibration (the slow part: running the model) yields per-tensor ranges that are cached; the
QDQ build from ranges + a node set is cheap and deterministic, so sensitivity analysis and
the accuracy budget can rebuild the model many times without recalibrating.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from edgefuse.errors import QuantizeError
from edgefuse.quantize.configs import _Int8Base
from edgefuse.quantize.graph import LINEAR_OPS

log = logging.getLogger(__name__)

Ranges = dict[str, tuple[float, float]]


def calibrate_ranges(model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]], cfg: _Int8Base,
                     op_types: Sequence[str] = LINEAR_OPS) -> Ranges:
    """Per-tensor activation ranges of the inputs/outputs of `op_types` nodes over `feeds`."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    from edgefuse.calibration.reader import FeedReader

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[cfg.method]
    extra: dict = {"symmetric": True}
    if cfg.method == "entropy":
        extra.update(num_bins=cfg.num_bins, num_quantized_bins=128)
    elif cfg.method == "percentile":
        extra.update(num_bins=cfg.num_bins, percentile=cfg.percentile)
    else:
        extra = {}  # min/max: symmetry is applied when scales are made (ActivationSymmetric)
    with tempfile.TemporaryDirectory(prefix="edgefuse-calib-") as tmp:
        src = Path(tmp) / "model.onnx"
        onnx.save_model(model, src)
        try:
            calibrator = create_calibrator(src, list(op_types), augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                           calibrate_method=method, extra_options=extra)
            # one pass per input-shape group: ORT's histogram collectors stack a pass's outputs,
            # which fails for feeds of different text lengths; statistics accumulate across passes
            groups: dict[tuple, list[dict[str, np.ndarray]]] = {}
            for f in feeds:
                groups.setdefault(tuple((k, v.shape) for k, v in sorted(f.items())), []).append(f)
            for group in groups.values():
                calibrator.collect_data(FeedReader(group))
            data = calibrator.compute_data()
        except Exception as e:  # ORT raises plain exceptions: give the user a typed one
            raise QuantizeError(f"calibration failed in ONNX Runtime: {str(e).splitlines()[0][:200]}",
                                "check that the calibration inputs match the model", code="EF520") from e
        del calibrator
    out: Ranges = {}
    for name, td in data.items():
        lo, hi = td.range_value
        lo, hi = float(np.asarray(lo).min()), float(np.asarray(hi).max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            log.warning("tensor %s has a non-finite range (%s, %s); it will not be quantized", name, lo, hi)
            continue
        out[name] = (lo, hi)
    return out


def _tensors_data(ranges: Ranges):
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

    return TensorsData(CalibrationMethod.MinMax, {
        k: TensorData(lowest=np.array(lo, dtype=np.float32), highest=np.array(hi, dtype=np.float32))
        for k, (lo, hi) in sorted(ranges.items())
    })


def build_qdq(model: onnx.ModelProto, ranges: Ranges, nodes: Sequence[str], cfg: _Int8Base,
              weight_pairs: bool = False) -> onnx.ModelProto:
    """Insert Q/DQ on the inputs of `nodes` (MatMul/Gemm/Conv) with the calibrated ranges.

    Symmetric INT8 activations (per tensor) and weights (per channel), FP32 bias, no Q/DQ on
    node outputs: the pattern TensorRT fuses into INT8 kernels. `weight_pairs` keeps float
    weights behind Q/DQ pairs so single nodes can be reverted exactly (`qdq.bypass_nodes`);
    `qdq.fold_weight_quantizers` then stores them as INT8.
    """
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    if not nodes:
        return copy.deepcopy(model)
    extra = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "OpTypesToExcludeOutputQuantization": list(LINEAR_OPS) + ["Gather"],
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
        "AddQDQPairToWeight": weight_pairs,
        "DedicatedQDQPair": False,  # one shared pair per tensor (q/k/v); restrict_qdq keeps other readers on the float tensor
    }
    q = QDQQuantizer(copy.deepcopy(model), cfg.per_channel, cfg.reduce_range, QuantType.QInt8, QuantType.QInt8,
                     _tensors_data(ranges), sorted(nodes), None, sorted({*LINEAR_OPS, "Gather"}), extra)
    try:
        q.quantize_model()
    except Exception as e:
        raise QuantizeError(f"QDQ insertion failed in ONNX Runtime: {str(e).splitlines()[0][:200]}",
                            "exclude the node named in the message with exclude_nodes", code="EF521") from e
    return q.model.model


def qdq_node_count(model: onnx.ModelProto) -> int:
    return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
