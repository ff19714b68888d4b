"""The built-in backends: FP16, INT8 with ONNX Runtime, INT8 with NNCF (see registry.py)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass

import onnx

from edgefuse.calibration.cache import StatsCache, cache_key
from edgefuse.calibration.dataset import CalibrationSet
from edgefuse.quantize import fp16 as fp16_mod
from edgefuse.quantize import int8_ort, qdq
from edgefuse.quantize.configs import Fp16Config, Int8NncfConfig, Int8OrtConfig, _Int8Base
from edgefuse.quantize.graph import LINEAR_OPS, GraphInfo, analyse
from edgefuse.quantize.registry import Plan, register

log = logging.getLogger(__name__)

CALIBRATED_OPS = (*LINEAR_OPS, "Gather")
NOT_QUANTIZED_WHY = {
    "Add": "residual/bias add: no Q/DQ (TensorRT rules: Q/DQ only on MatMul/Gemm/Conv inputs)",
    "LayerNormalization": "LayerNorm stays in higher precision (transformer-aware default)",
    "Softmax": "Softmax stays in higher precision (attention-score path)",
    "Sigmoid": "sigmoid (box head) stays in higher precision",
}


@dataclass
class Context:
    """What every backend gets: the FP32 model, its hash, the calibration data, the cache."""

    model: onnx.ModelProto
    model_sha256: str
    calib: CalibrationSet
    cache: StatsCache
    threads: int = 1

    def key(self, recipe: dict) -> str:
        return cache_key(self.calib.data_hash, self.calib.preprocess_fingerprint, self.model_sha256, recipe)


# ---- INT8 -------------------------------------------------------------------------------


def int8_groups(info: GraphInfo) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Quantizer groups (one per module and role) and each group's role."""
    head = set(info.head_nodes)
    roles_of_node: dict[str, str] = {}
    for n in info.linear_nodes:
        roles_of_node[n] = "head" if n in head else "linear"
    for n in info.attention_nodes:
        roles_of_node[n] = "attention"
    for n in info.embedding_nodes:
        roles_of_node[n] = "embedding"
    groups: dict[str, list[str]] = defaultdict(list)
    roles: dict[str, str] = {}
    for n, role in roles_of_node.items():
        name = info.scopes[n] if role in ("linear", "head") else f"{info.scopes[n]}#{role}"
        groups[name].append(n)
        roles[name] = role
    return {g: sorted(v) for g, v in sorted(groups.items())}, roles


_ROLE_REASON = {
    "head": "final head layer: kept in FP32 by default (quantize_head=True lowers it)",
    "attention": "attention-score MatMul (activation x activation): kept in FP32 by default (quantize_attention=True lowers it)",
    "embedding": "embedding table: kept in FP32 by default (quantize_embedding=True lowers it)",
}


def int8_ranges(ctx: Context, cfg: _Int8Base) -> tuple[int8_ort.Ranges, bool]:
    import onnxruntime

    recipe = {"kind": "int8-ranges", "method": cfg.method, "percentile": cfg.percentile if cfg.method == "percentile" else None,
              "num_bins": cfg.num_bins if cfg.method != "minmax" else None, "ops": sorted(CALIBRATED_OPS), "ort": onnxruntime.__version__}
    key = ctx.key(recipe)
    hit = ctx.cache.get(key)
    if hit is not None:
        return {k: (float(v[0]), float(v[1])) for k, v in hit["ranges"].items()}, True
    ranges = int8_ort.calibrate_ranges(ctx.model, ctx.calib.feeds, cfg, CALIBRATED_OPS)
    ctx.cache.put(key, {"ranges": {k: [lo, hi] for k, (lo, hi) in sorted(ranges.items())}},
                  {**ctx.calib.identity(), "model_sha256": ctx.model_sha256, "recipe": recipe})
    # JSON round trip so a cached and a fresh run build byte-identical models
    return {k: (float(lo), float(hi)) for k, (lo, hi) in ranges.items()}, False


def _int8_common(ctx: Context, cfg: _Int8Base) -> tuple[Plan, int8_ort.Ranges]:
    info = analyse(ctx.model)
    ranges, hit = int8_ranges(ctx, cfg)
    groups, roles = int8_groups(info)
    kept: dict[str, list[str]] = {}
    default: list[str] = []
    usable: dict[str, list[str]] = {}
    for g, nodes in groups.items():
        missing = [n for n in nodes if any(t not in ranges for t in _activation_inputs(info, n))]
        if missing:
            for n in nodes:
                kept[n] = ["no finite calibration range for its input"]
            continue
        usable[g] = nodes
        role = roles[g]
        lowered = role == "linear" or (role == "head" and cfg.quantize_head) or (role == "attention" and cfg.quantize_attention) \
            or (role == "embedding" and cfg.quantize_embedding)
        if any(n in cfg.include_nodes for n in nodes):
            lowered = True
        excluded = [n for n in nodes if n in cfg.exclude_nodes]
        if excluded:
            lowered = False
        if lowered:
            default.append(g)
        else:
            for n in nodes:
                kept[n] = ["named in exclude_nodes"] if n in excluded else [_ROLE_REASON[role]]
    candidates = sorted(n for nodes in usable.values() for n in nodes)
    full = int8_ort.build_qdq(ctx.model, ranges, candidates, cfg, weight_pairs=True)

    def build(lowered: Collection[str]) -> onnx.ModelProto:
        return qdq.fold_weight_quantizers(qdq.restrict_qdq(full, {n for g in lowered for n in usable[g]}))

    op_counts: dict[str, int] = defaultdict(int)
    for n in ctx.model.graph.node:
        op_counts[n.op_type] += 1
    details = {"calibration_cache_hit": hit, "calibrated_tensors": len(ranges), "roles": roles,
               "not_quantized_ops": {op: {"count": c, "why": NOT_QUANTIZED_WHY[op]} for op, c in sorted(op_counts.items())
                                     if op in NOT_QUANTIZED_WHY}}
    return Plan(usable, default, kept, build, "simulated", details=details), ranges


def _activation_inputs(info: GraphInfo, node: str) -> list[str]:
    n = info.node(node)
    if n.op_type == "Gather":
        return []
    ins = [n.input[0]]
    if n.op_type == "MatMul" and node in info.attention_nodes:
        ins.append(n.input[1])
    return ins


@register(Int8OrtConfig)
def prepare_int8_ort(ctx: Context, cfg: Int8OrtConfig) -> Plan:
    cfg.check()
    plan, _ = _int8_common(ctx, cfg)
    plan.details["backend"] = "onnxruntime.quantization (QDQ, symmetric INT8, per-channel weights)"
    return plan


@register(Int8NncfConfig)
def prepare_int8_nncf(ctx: Context, cfg: Int8NncfConfig) -> Plan:
    from edgefuse.quantize.int8_nncf import nncf_quantize

    cfg.check()
    plan, _ = _int8_common(ctx, cfg)

    def final(lowered: Collection[str]) -> onnx.ModelProto:
        return qdq.fold_weight_quantizers(nncf_quantize(ctx.model, ctx.calib.feeds, plan.nodes_of(lowered), cfg))

    plan.final_build = final
    plan.budget_step = "double"
    plan.details["backend"] = "nncf.quantize (ModelType.TRANSFORMER, PERFORMANCE preset)"
    plan.details["sensitivity_note"] = "per-group SQNR measured with edgefuse's QDQ builder on the same calibration data"
    return plan


# ---- FP16 -------------------------------------------------------------------------------


def fp16_stats(ctx: Context, max_feeds: int = 64) -> tuple[dict, bool]:
    import onnxruntime

    feeds = ctx.calib.feeds[:max_feeds]
    recipe = {"kind": "fp16-activation-stats", "feeds": len(feeds), "ort": onnxruntime.__version__}
    key = ctx.key(recipe)
    hit = ctx.cache.get(key)
    if hit is not None:
        return hit["tensors"], True
    stats = fp16_mod.collect_activation_stats(ctx.model, feeds)
    ctx.cache.put(key, {"tensors": stats}, {**ctx.calib.identity(), "model_sha256": ctx.model_sha256, "recipe": recipe})
    return stats, False


def _fp16_group(scope: str) -> str:
    parts = scope.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and parts[1].isdigit() else parts[0]


@register(Fp16Config)
def prepare_fp16(ctx: Context, cfg: Fp16Config) -> Plan:
    info = analyse(ctx.model)
    stats, hit = fp16_stats(ctx)
    kept = fp16_mod.fp16_keep_list(ctx.model, stats, cfg)
    types = fp16_mod.float_tensor_types(ctx.model)
    groups: dict[str, list[str]] = defaultdict(list)
    for n in ctx.model.graph.node:
        if n.name in kept or not any(types.get(t) == onnx.TensorProto.FLOAT for t in [*n.input, *n.output] if t):
            continue
        scope = info.scopes[n.name]
        groups[_fp16_group(scope) if scope != n.name else "top-level"].append(n.name)
    groups = {g: sorted(v) for g, v in sorted(groups.items())}
    all_nodes = {n for v in groups.values() for n in v}

    def build(lowered: Collection[str]) -> onnx.ModelProto:
        lowered_nodes = {n for g in lowered for n in groups[g]}
        return fp16_mod.convert_to_fp16(ctx.model, set(kept) | (all_nodes - lowered_nodes))

    details = {"activation_stats_cache_hit": hit, "tensors_measured": len(stats),
               "max_activation": max((s["absmax"] for s in stats.values()), default=0.0)}
    return Plan(groups, list(groups), kept, build, "cpu", details=details)
