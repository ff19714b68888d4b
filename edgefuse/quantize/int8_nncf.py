"""INT8 QDQ with NNCF (post-training quantization of the ONNX model), as `--backend nncf`.

Same TensorRT-style scheme as the ORT backend (symmetric INT8, per-channel weights, Q/DQ only
on MatMul/Gemm/Conv inputs, the same transformer-aware keep-list passed as an ignored scope),
but NNCF's own statistics, range estimators, SmoothQuant and bias correction. NNCF writes
INT8 weights itself, so reverting layers (accuracy budget) re-runs NNCF with them ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import onnx

from edgefuse.errors import QuantizeError
from edgefuse.quantize.configs import Int8NncfConfig
from edgefuse.quantize.graph import LINEAR_OPS

log = logging.getLogger(__name__)


def nncf_quantize(model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]], nodes: Sequence[str],
                  cfg: Int8NncfConfig) -> onnx.ModelProto:
    """QDQ model with Q/DQ on the inputs of exactly `nodes` (weights still float: fold afterwards)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix, QuantizationParameters
    from nncf.quantization.range_estimator import (AggregatorType, RangeEstimatorParameters, RangeEstimatorParametersSet,
                                                   StatisticsCollectorParameters, StatisticsType)

    wanted = set(nodes)
    other_linear = [n.name for n in model.graph.node if n.op_type in (*LINEAR_OPS, "Gather") and n.name not in wanted]
    other_types = sorted({n.op_type for n in model.graph.node} - {*LINEAR_OPS, "Gather"})
    if cfg.method == "percentile":
        prob = 1.0 - cfg.percentile / 100.0
        act_range = RangeEstimatorParameters(
            min=StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MEAN, quantile_outlier_prob=prob),
            max=StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MEAN, quantile_outlier_prob=prob))
    else:
        act_range = RangeEstimatorParametersSet.MINMAX
    advanced = AdvancedQuantizationParameters(
        overflow_fix=OverflowFix.ENABLE if cfg.reduce_range else OverflowFix.DISABLE,
        disable_bias_correction=not cfg.fast_bias_correction,
        activations_quantization_params=None,
        weights_quantization_params=None if cfg.per_channel else QuantizationParameters(per_channel=False),
        activations_range_estimator_params=act_range,
    )
    if not wanted:
        return model
    try:
        return nncf.quantize(
            model, nncf.Dataset(list(feeds)), preset=nncf.QuantizationPreset.PERFORMANCE,
            model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds), fast_bias_correction=True,
            ignored_scope=nncf.IgnoredScope(names=other_linear, types=other_types, validate=False),
            advanced_parameters=advanced,
        )
    except Exception as e:  # NNCF raises many kinds: give the user a typed one
        raise QuantizeError(f"NNCF quantization failed: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}",
                            "try --backend ort, or exclude the node named in the message", code="EF530") from e
