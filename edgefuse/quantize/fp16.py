"""FP16 conversion with a data-driven FP32 keep-list (in the spirit of ModelOpt AutoCast).

Graph inputs and outputs stay FP32 (Casts at the boundary). A node stays FP32 when the
calibration data shows risk: a finite input/output magnitude above `data_max` (FP16 tops out
at 65504 and loses precision long before), a weight above `init_max`, or a reduction deeper
than `max_reduction_depth` elements (long sums lose precision); plus whatever the user names.
Every kept node gets its reasons. (ONNX Runtime's CPU EP casts ops it has no FP16 kernel for.)
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgefuse.quantize.configs import Fp16Config
from edgefuse.quantize.graph import analyse, constant_names

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
_REDUCE_OPS = {"ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSumExp", "ReduceProd"}
_FLOAT_ATTR_OPS = {"Cast": "to", "EyeLike": "dtype", "RandomNormal": "dtype", "RandomUniform": "dtype",
                   "RandomNormalLike": "dtype", "RandomUniformLike": "dtype"}


def float_tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor that shape inference can type."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    types: dict[str, int] = {}
    for vi in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]:
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def collect_activation_stats(model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, dict]:
    """Per float tensor: max |finite value|, whether it holds inf/nan, and the last shape seen."""
    import onnxruntime as ort

    types = float_tensor_types(model)
    m = copy.deepcopy(model)
    existing = {o.name for o in m.graph.output}
    names = [t for n in m.graph.node for t in n.output if t and types.get(t) == TensorProto.FLOAT and t not in existing]
    for t in names:
        m.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    stats: dict[str, dict] = {}
    for f in feeds:
        feed = {k: v for k, v in f.items() if k in {i.name for i in sess.get_inputs()}}
        for name, val in zip(out_names, sess.run(None, feed)):
            if not isinstance(val, np.ndarray) or val.dtype != np.float32:
                continue
            finite = np.isfinite(val)
            amax = float(np.abs(val[finite]).max()) if finite.any() else 0.0
            s = stats.setdefault(name, {"absmax": 0.0, "nonfinite": False, "shape": list(val.shape)})
            s["absmax"] = max(s["absmax"], amax)
            s["nonfinite"] = s["nonfinite"] or not bool(finite.all())
            s["shape"] = list(val.shape)
    for i in model.graph.input:  # graph inputs too
        vals = [f[i.name] for f in feeds if i.name in f and f[i.name].dtype == np.float32 and f[i.name].size]
        if vals:
            stats[i.name] = {"absmax": float(max(np.abs(v).max() for v in vals)), "nonfinite": False, "shape": list(vals[-1].shape)}
    return stats


def _reduction_depth(node: onnx.NodeProto, stats: dict[str, dict], consts: dict[str, np.ndarray]) -> int | None:
    """Elements summed per output value, from the shapes seen at calibration."""
    shape = stats.get(node.input[0], {}).get("shape") if node.input else None
    if shape is None:
        return None
    if node.op_type in ("MatMul", "Gemm"):
        if node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute):
            return int(shape[0])
        return int(shape[-1])
    if node.op_type == "Conv":
        w = consts.get(node.input[1])
        return int(np.prod(w.shape[1:])) if w is not None else None
    if node.op_type in ("Softmax", "LayerNormalization"):
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        if node.op_type == "LayerNormalization":
            return int(np.prod(shape[axis:]))
        return int(shape[axis])
    if node.op_type in _REDUCE_OPS:
        axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
        if axes is None and len(node.input) > 1 and node.input[1] in consts:
            axes = [int(a) for a in consts[node.input[1]].ravel()]
        if not axes:
            return int(np.prod(shape))
        return int(np.prod([shape[a] for a in axes]))
    return None


def fp16_keep_list(model: onnx.ModelProto, stats: dict[str, dict], cfg: Fp16Config) -> dict[str, list[str]]:
    """node name -> reasons it stays FP32 (nodes with no float tensors are not listed)."""
    types = float_tensor_types(model)
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    keep: dict[str, list[str]] = defaultdict(list)
    for n in model.graph.node:
        floats = [t for t in [*n.input, *n.output] if t and types.get(t) == TensorProto.FLOAT]
        if not floats:
            continue
        if n.name in cfg.keep_nodes:
            keep[n.name].append("named in keep_nodes")
        if n.op_type in cfg.keep_ops:
            keep[n.name].append(f"op {n.op_type} named in keep_ops")
        big = [(t, stats[t]["absmax"]) for t in floats if t in stats and stats[t]["absmax"] > cfg.data_max]
        if big:
            t, v = max(big, key=lambda x: x[1])
            keep[n.name].append(f"|{t}| reaches {v:.4g} > data_max {cfg.data_max:g} on calibration data")
        for t in n.input:
            if t in consts and consts[t].dtype == np.float32 and consts[t].size and np.abs(consts[t]).max() > cfg.init_max:
                keep[n.name].append(f"weight {t} reaches {np.abs(consts[t]).max():.4g} > init_max {cfg.init_max:g}")
        depth = _reduction_depth(n, stats, consts)
        if depth is not None and depth > cfg.max_reduction_depth:
            keep[n.name].append(f"reduces {depth} elements > max_reduction_depth {cfg.max_reduction_depth}")
    return dict(keep)


def convert_to_fp16(model: onnx.ModelProto, keep: set[str] | dict[str, list[str]]) -> onnx.ModelProto:
    """FP16 everywhere except the `keep` nodes; FP32 graph inputs/outputs with Casts at each
    boundary between FP32 and FP16 regions."""
    m = copy.deepcopy(model)
    analyse(m)  # names every node
    types = float_tensor_types(m)
    keep = set(keep)
    g = m.graph
    is_float = lambda t: types.get(t) == TensorProto.FLOAT  # noqa: E731
    half_nodes = {n.name for n in g.node if n.name not in keep}
    producer = {t: n for n in g.node for t in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in g.node:
        for t in n.input:
            consumers[t].append(n)
    inits = {i.name: i for i in g.initializer}
    const_nodes = constant_names(m) - set(inits)
    graph_outputs = {o.name for o in g.output}
    new_nodes: list[onnx.NodeProto] = []
    cast_cache: dict[tuple[str, int], str] = {}

    def cast(t: str, to: int, before: list[onnx.NodeProto]) -> str:
        key = (t, to)
        if key not in cast_cache:
            suffix = "fp16" if to == TensorProto.FLOAT16 else "fp32"
            out = f"{t}__to_{suffix}"
            before.append(helper.make_node("Cast", [t], [out], name=f"Cast_{t}__to_{suffix}", to=to))
            cast_cache[key] = out
        return cast_cache[key]

    # 1. initializers: convert those used only by FP16 nodes; copy those shared with FP32 nodes
    for name, init in list(inits.items()):
        if init.data_type != TensorProto.FLOAT:
            continue
        users = consumers.get(name, [])
        half_users = [u for u in users if u.name in half_nodes]
        if not half_users:
            continue
        arr = numpy_helper.to_array(init)
        if arr.size and np.abs(arr).max() > FP16_MAX:
            log.warning("initializer %s exceeds the FP16 range: clipped to +-%g", name, FP16_MAX)
        arr = np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16)
        if len(half_users) == len(users) and name not in graph_outputs:
            init.CopyFrom(numpy_helper.from_array(arr, name))
        else:
            g.initializer.append(numpy_helper.from_array(arr, f"{name}__fp16"))
            for u in half_users:
                for k, t in enumerate(u.input):
                    if t == name:
                        u.input[k] = f"{name}__fp16"
    # 2. nodes: FP16 nodes get FP16 inputs (Cast from FP32 producers) and FP16 attributes
    converted_consts: set[str] = set()
    for n in list(g.node):
        pre: list[onnx.NodeProto] = []
        if n.name in half_nodes:
            if n.op_type == "Constant" and n.output[0] in const_nodes:
                for a in n.attribute:
                    if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                        a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
                        converted_consts.add(n.output[0])
            elif n.op_type == "ConstantOfShape":
                for a in n.attribute:
                    if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                        a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
            attr = _FLOAT_ATTR_OPS.get(n.op_type)
            if attr:
                for a in n.attribute:
                    if a.name == attr and a.i == TensorProto.FLOAT:
                        a.i = TensorProto.FLOAT16
            for k, t in enumerate(n.input):
                if not t or not is_float(t) or t in inits or t.endswith("__fp16"):
                    continue
                p = producer.get(t)
                if p is None or p.name not in half_nodes:  # graph input or FP32 producer
                    n.input[k] = cast(t, TensorProto.FLOAT16, pre)
        else:
            for k, t in enumerate(n.input):
                if not t or not is_float(t):
                    continue
                p = producer.get(t)
                if p is not None and p.name in half_nodes:  # FP16 producer -> FP32 consumer
                    n.input[k] = cast(t, TensorProto.FLOAT, pre)
        new_nodes.extend(pre)
        new_nodes.append(n)
    # 3. graph outputs produced in FP16: rename inside, Cast back to the FP32 name
    tail: list[onnx.NodeProto] = []
    for o in g.output:
        p = producer.get(o.name)
        if p is None or p.name not in half_nodes or not is_float(o.name):
            continue
        inner = f"{o.name}__fp16"
        for k, t in enumerate(p.output):
            if t == o.name:
                p.output[k] = inner
        for nn_ in new_nodes:
            if nn_ is p:
                continue
            for k, t in enumerate(nn_.input):
                if t == o.name:
                    nn_.input[k] = inner
        tail.append(helper.make_node("Cast", [inner], [o.name], name=f"Cast_{o.name}__to_fp32", to=TensorProto.FLOAT))
    del g.node[:]
    g.node.extend(new_nodes + tail)
    del g.value_info[:]  # stale FP32 types; ORT infers the rest
    return m
