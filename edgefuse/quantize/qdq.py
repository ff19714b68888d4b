"""QDQ graph surgery shared by the INT8 backends.

- `bypass_nodes` / `restrict_qdq`: take nodes back to higher precision by routing their inputs
  around QuantizeLinear -> DequantizeLinear pairs (exact: the float tensor is still there).
- `fold_weight_quantizers`: a QuantizeLinear over a float weight becomes a stored INT8 weight
  (what makes the file ~4x smaller; TensorRT reads DequantizeLinear(int8 weight) directly).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Collection

import numpy as np
import onnx
from onnx import numpy_helper


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def bypass_nodes(model: onnx.ModelProto, nodes: Collection[str]) -> onnx.ModelProto:
    m = copy.deepcopy(model)
    g = m.graph
    producer = {t: n for n in g.node for t in n.output}
    targets = set(nodes)
    for n in g.node:
        if n.name not in targets:
            continue
        for k, t in enumerate(n.input):
            dq = producer.get(t)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                n.input[k] = q.input[0]
    return prune_dead(m)


def restrict_qdq(model: onnx.ModelProto, lowered: Collection[str]) -> onnx.ModelProto:
    """Only `lowered` nodes keep reading Q/DQ outputs; every other consumer (residual adds,
    concats, kept layers) reads the float tensor again."""
    keep = set(lowered)
    return bypass_nodes(model, [n.name for n in model.graph.node if n.name not in keep and n.op_type not in ("QuantizeLinear", "DequantizeLinear")])


def prune_dead(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop Q/DQ nodes and initializers nothing consumes any more."""
    g = model.graph
    while True:
        used = {t for n in g.node for t in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {t for n in g.node for t in n.input} | {o.name for o in g.output}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return model


def fold_weight_quantizers(model: onnx.ModelProto) -> onnx.ModelProto:
    """QuantizeLinear(float initializer) -> stored integer initializer (round half to even, saturate)."""
    m = copy.deepcopy(model)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, int] = defaultdict(int)
    for n in g.node:
        for t in n.input:
            consumers[t] += 1
    folded: list[onnx.NodeProto] = []
    for n in g.node:
        if n.op_type != "QuantizeLinear" or n.input[0] not in inits or n.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[n.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
        zp_init = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        zp = numpy_helper.to_array(zp_init) if zp_init is not None else np.zeros((), np.uint8)
        if scale.ndim == 1 and scale.size > 1:
            axis = _attr(n, "axis", 1) % w.ndim
            shape = [1] * w.ndim
            shape[axis] = scale.size
            scale = scale.reshape(shape)
            zp = zp.reshape(shape)
        info = np.iinfo(zp.dtype)
        q = np.clip(np.rint(w / scale) + zp.astype(np.int32), info.min, info.max).astype(zp.dtype)
        g.initializer.append(numpy_helper.from_array(q, n.output[0]))
        folded.append(n)
    for n in folded:
        g.node.remove(n)
    return prune_dead(m)
