"""Read an FP32 ONNX graph the way a quantizer needs it: which nodes are linear layers,
which sit on the attention-score path or in the final heads, and which module each belongs to.

The classification drives the transformer-aware INT8 defaults and the FP16 keep-list. It works
on any ONNX graph; where the dynamo exporter left module scopes in the node metadata, groups
are named after the PyTorch modules (e.g. `fusion.0.cross.q`), else after the node.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass, field

import onnx
from onnx import numpy_helper

LINEAR_OPS = ("MatMul", "Gemm", "Conv")
# Ops where the walk back from an output stops: what is downstream of them is "the head".
_HEAD_STOP_OPS = {"LayerNormalization", "Softmax", "SkipLayerNormalization"}


@dataclass
class GraphInfo:
    """What the quantizers need to know about a graph, computed once."""

    model: onnx.ModelProto
    constants: set[str]
    producers: dict[str, onnx.NodeProto]
    consumers: dict[str, list[onnx.NodeProto]]
    linear_nodes: list[str] = field(default_factory=list)  # MatMul/Gemm/Conv with a constant weight
    attention_nodes: list[str] = field(default_factory=list)  # activation x activation MatMul
    head_nodes: list[str] = field(default_factory=list)  # the last linear layer before each output
    embedding_nodes: list[str] = field(default_factory=list)  # Gather from a constant table
    scopes: dict[str, str] = field(default_factory=dict)  # node name -> module path

    def node(self, name: str) -> onnx.NodeProto:
        return self._by_name[name]

    def __post_init__(self) -> None:
        self._by_name = {n.name: n for n in self.model.graph.node}


def ensure_node_names(model: onnx.ModelProto) -> None:
    """Give every unnamed node a stable name (quantizers select nodes by name)."""
    seen: set[str] = set()
    for i, n in enumerate(model.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}"
        seen.add(n.name)


def module_scope(node: onnx.NodeProto) -> str:
    """The PyTorch module path the exporter recorded for a node ('' if none)."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                return ""
            # last entry is the op itself; the one before is the innermost module
            mods = [s[6:] if s.startswith("inner.") else s for s in scopes[:-1] if s and s != "inner"]
            return mods[-1] if mods else ""
    return ""


def constant_names(model: onnx.ModelProto) -> set[str]:
    names = {i.name for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            names.update(n.output)
    return names


def _is_const_through(name: str, constants: set[str], producers: dict[str, onnx.NodeProto]) -> bool:
    """A tensor is a weight if it is a constant, or a Transpose/Cast/Reshape of one."""
    seen = 0
    while name not in constants:
        p = producers.get(name)
        if p is None or p.op_type not in ("Transpose", "Cast", "Reshape", "Identity", "DequantizeLinear") or seen > 4:
            return False
        name = p.input[0]
        seen += 1
    return True


def analyse(model: onnx.ModelProto) -> GraphInfo:
    """Classify the nodes of `model` (names are assigned first if missing)."""
    ensure_node_names(model)
    constants = constant_names(model)
    producers: dict[str, onnx.NodeProto] = {}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in model.graph.node:
        for o in n.output:
            producers[o] = n
        for i in n.input:
            if i:
                consumers[i].append(n)
    info = GraphInfo(model, constants, producers, dict(consumers))
    for n in model.graph.node:
        info.scopes[n.name] = module_scope(n) or n.name
        if n.op_type in LINEAR_OPS:
            weight_idx = 1
            if len(n.input) > weight_idx and _is_const_through(n.input[weight_idx], constants, producers):
                info.linear_nodes.append(n.name)
            elif n.op_type == "MatMul":
                info.attention_nodes.append(n.name)
        elif n.op_type == "Gather" and n.input[0] in constants:
            info.embedding_nodes.append(n.name)
    info.head_nodes = _head_nodes(model, producers, set(info.linear_nodes))
    return info


def _head_nodes(model: onnx.ModelProto, producers: dict[str, onnx.NodeProto], linear: set[str]) -> list[str]:
    """The final linear layer(s) of each output: walking back from an output, the first linear
    layers met (the walk stops there, and at LayerNorm/Softmax)."""
    out: list[str] = []
    stack = [o.name for o in model.graph.output]
    seen: set[str] = set()
    while stack:
        t = stack.pop()
        p = producers.get(t)
        if p is None or p.name in seen:
            continue
        seen.add(p.name)
        if p.op_type in _HEAD_STOP_OPS:
            continue
        if p.name in linear:
            out.append(p.name)
            continue
        stack.extend(i for i in p.input if i)
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    return sorted(out, key=order.__getitem__)


def initializer_array(model: onnx.ModelProto, name: str):
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    raise KeyError(name)


def float_outputs(model: onnx.ModelProto) -> list[str]:
    return [o.name for o in model.graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]


def strip_debug_metadata(model: onnx.ModelProto, keep: tuple[str, ...] = ("pkg.torch.onnx.name_scopes",)) -> None:
    """Drop the exporter's per-node debug strings (stack traces, FX nodes) except module scopes."""
    for n in model.graph.node:
        kept = [(p.key, p.value) for p in n.metadata_props if p.key in keep]
        del n.metadata_props[:]
        for k, v in kept:
            n.metadata_props.add(key=k, value=v)
