"""Split a dual-stream fusion ONNX graph into vision tower, text tower and fusion/head parts.

Why: an 8 GB Jetson can run out of memory building one engine for a large fusion model;
three smaller engines build (and can be rebuilt) separately. The split is found from the
graph itself, so no exporter cooperation is needed: every node is classed by which graph
inputs it depends on (only pixel_values -> vision, only text inputs -> text, both -> fusion).
Float tensors crossing from a tower into the fusion part become engine I/O; non-float ones
(shapes, masks as ints) are recomputed inside the fusion part instead, because shape tensors
make poor engine inputs. An artifact whose towers hold no MatMul/Gemm/Conv (e.g. a
single-stream model, where image and text share one encoder from the first layer) cannot be
split and is refused.

The boundary tensors' min/opt/max shapes are measured, not guessed: the full model runs on
ONNX Runtime at the profile's min, opt and max shapes with the boundary tensors as extra
outputs. The same run checks that the three parts chained reproduce the full model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgefuse.errors import EngineError
from edgefuse.runtime.engines.profiles import ProfileShapes

log = logging.getLogger(__name__)

VISION_INPUTS = ("pixel_values",)
TEXT_INPUTS = ("input_ids", "attention_mask")
HEAVY_OPS = {"MatMul", "Gemm", "Conv", "MatMulInteger", "QLinearMatMul", "QLinearConv", "Attention", "MultiHeadAttention"}
FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
SHAPE_OPS = {"Shape", "Size"}


@dataclass
class Part:
    name: str  # vision | text | fusion
    model: Any  # onnx.ModelProto
    inputs: list[str]
    outputs: list[str]
    profile: ProfileShapes = field(default_factory=dict)
    input_specs: list[dict[str, Any]] = field(default_factory=list)
    output_specs: list[dict[str, Any]] = field(default_factory=list)


def _classify(graph: Any) -> tuple[dict[str, frozenset[str]], list[str]]:
    """Graph-input dependencies of every tensor, and each node's class (by node index)."""
    inputs = {i.name for i in graph.input} - {t.name for t in graph.initializer}
    deps: dict[str, frozenset[str]] = {name: frozenset([name]) for name in inputs}
    classes = []
    for node in graph.node:
        d: frozenset[str] = frozenset().union(*(deps.get(x, frozenset()) for x in node.input if x))
        for sub in _subgraph_inputs(node):
            d |= deps.get(sub, frozenset())
        if node.op_type in SHAPE_OPS:
            d = frozenset()  # reads only the input's shape, which every input with the same axes shares
        for out in node.output:
            deps[out] = d
        if not d:
            classes.append("const")
        elif d <= set(VISION_INPUTS):
            classes.append("vision")
        elif d <= set(TEXT_INPUTS):
            classes.append("text")
        else:
            classes.append("fusion")
    return deps, classes


def _subgraph_inputs(node: Any) -> list[str]:
    """Outer-scope names used inside If/Loop bodies (they are dependencies too)."""
    names = []
    for attr in node.attribute:
        for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            for n in g.node:
                names.extend(n.input)
    return names


def _ancestors(graph: Any, producers: dict[str, int], tensors: Sequence[str]) -> set[int]:
    out: set[int] = set()
    stack = [producers[t] for t in tensors if t in producers]
    while stack:
        i = stack.pop()
        if i in out:
            continue
        out.add(i)
        node = graph.node[i]
        stack.extend(producers[x] for x in [*node.input, *_subgraph_inputs(node)] if x in producers)
    return out


def _elem_types(model: Any) -> dict[str, int]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - inference is best effort; the ORT probe has the real dtypes
        inferred = model
    g = inferred.graph
    return {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}


def plan_split(model: Any) -> tuple[dict[str, list[int]], dict[str, list[str]], dict[str, list[str]]]:
    """Node indices, inputs and outputs of each part. Raises EngineError if the model can't split."""
    graph = model.graph
    names = {i.name for i in graph.input} - {t.name for t in graph.initializer}
    unknown = names - set(VISION_INPUTS) - set(TEXT_INPUTS)
    if unknown or not (names & set(VISION_INPUTS)) or not (names & set(TEXT_INPUTS)):
        raise EngineError(f"split engines need an image-text model with inputs {', '.join(VISION_INPUTS + TEXT_INPUTS)}; "
                          f"this one has {', '.join(sorted(names))}",
                          "set split_engines: false for this target", code="EF850")
    _, classes = _classify(graph)
    for tower in ("vision", "text"):
        if not any(c == tower and graph.node[i].op_type in HEAVY_OPS for i, c in enumerate(classes)):
            raise EngineError(f"this model has no separate {tower} tower to split off (image and text meet from the first layer, "
                              "as in single-stream models)", "set split_engines: false for this target, or use a dual-stream model",
                              code="EF851")
    producers = {out: i for i, node in enumerate(graph.node) for out in node.output}
    etypes = _elem_types(model)
    graph_outputs = [o.name for o in graph.output]

    def used_by(idx: set[int]) -> list[str]:
        return [x for x in dict.fromkeys(y for i in sorted(idx) for y in [*graph.node[i].input, *_subgraph_inputs(graph.node[i])])
                if x]

    def with_consts(idx: set[int]) -> set[int]:
        return idx | {i for i in _ancestors(graph, producers, used_by(idx)) if classes[i] == "const"}

    towers = ("vision", "text")
    idx: dict[str, set[int]] = {p: with_consts({i for i, c in enumerate(classes) if c == p}) for p in ("vision", "text", "fusion")}
    owner = {out: p for p in towers for i in idx[p] for out in graph.node[i].output if classes[i] == p}
    boundary: dict[str, list[str]] = {"vision": [], "text": []}
    # Close each part over what it reads: a float tensor from a tower becomes that tower's output
    # (engine I/O); anything else (shape arithmetic, int masks) is recomputed inside the reader.
    for p in ("vision", "text", "fusion"):
        while True:
            produced = {o for i in idx[p] for o in graph.node[i].output}
            missing = [x for x in used_by(idx[p]) if x not in produced and x in producers]
            pull = []
            for x in missing:
                if p == "fusion" and x in owner and etypes.get(x, 1) in FLOAT_TYPES:
                    if x not in boundary[owner[x]]:
                        boundary[owner[x]].append(x)
                else:
                    pull.append(x)
            if not pull:
                break
            idx[p] = with_consts(idx[p] | _ancestors(graph, producers, pull))
    for p in towers:  # graph outputs computed inside a tower leave through it
        produced = {o for i in idx[p] for o in graph.node[i].output}
        boundary[p] += [o for o in graph_outputs if o in produced and o in owner and owner[o] == p and o not in boundary[p]]

    nodes = {p: sorted(v) for p, v in idx.items()}
    inputs: dict[str, list[str]] = {}
    for p in ("vision", "text", "fusion"):
        produced = {o for i in idx[p] for o in graph.node[i].output}
        inputs[p] = [x for x in used_by(idx[p]) if x not in produced and (x in names or x in producers)]
    outputs = {"vision": boundary["vision"], "text": boundary["text"],
               "fusion": [o for o in graph_outputs if o not in boundary["vision"] and o not in boundary["text"]]}
    for x in inputs["fusion"]:
        if x not in names and x not in outputs["vision"] and x not in outputs["text"]:
            raise EngineError(f"split: fusion input {x} has no producer part", "set split_engines: false", code="EF852")
    return nodes, inputs, outputs


def _ort_session(model: Any) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # exact, and FP16-safe on ORT 1.32 CPU
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _dummy_feed(input_specs: Sequence[Mapping[str, Any]], shapes: ProfileShapes, which: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feed = {}
    for spec in input_specs:
        shape = shapes[spec["name"]][which]
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f":
            feed[spec["name"]] = rng.uniform(-1, 1, shape).astype(dtype)
        elif spec["name"] == "input_ids":
            feed[spec["name"]] = rng.integers(1, 5, shape).astype(dtype)
        else:
            feed[spec["name"]] = np.ones(shape, dtype)
    return feed


def _value_info(name: str, arrays: Sequence[np.ndarray], axis_ranges: Mapping[str, tuple[int, int, int]]) -> Any:
    from onnx import helper

    lo, opt, hi = arrays
    dims: list[Any] = []
    for i, (a, b, c) in enumerate(zip(lo.shape, opt.shape, hi.shape, strict=True)):
        if a == b == c:
            dims.append(int(a))
        else:
            axis = next((k for k, r in axis_ranges.items() if tuple(r) == (a, b, c)), f"{name.replace('/', '_')}_d{i}")
            dims.append(axis)
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(opt.dtype), dims)


def split_model(
    model: Any,
    input_specs: Sequence[Mapping[str, Any]],
    shapes: ProfileShapes,
    axis_ranges: Mapping[str, tuple[int, int, int]],
    atol: float = 1e-3,
) -> list[Part]:
    """Cut `model` into vision/text/fusion parts with measured profile shapes for every part input.

    Runs the full model on ONNX Runtime at the min, opt and max shapes and checks the chained
    parts against it at opt (max abs difference <= atol relative to the output scale).
    """
    from onnx import helper

    graph = model.graph
    nodes, inputs, outputs = plan_split(model)
    boundary = list(dict.fromkeys(outputs["vision"] + outputs["text"]))
    probe = helper.make_model(
        helper.make_graph(list(graph.node), graph.name, list(graph.input),
                          list(graph.output) + [helper.make_empty_tensor_value_info(b) for b in boundary if b not in
                                                {o.name for o in graph.output}],
                          list(graph.initializer), value_info=list(graph.value_info)),
        opset_imports=list(model.opset_import))
    probe.ir_version = model.ir_version
    sess = _ort_session(probe)
    names = [o.name for o in sess.get_outputs()]
    runs: dict[str, dict[str, np.ndarray]] = {}
    feeds: dict[str, dict[str, np.ndarray]] = {}
    for which in ("min", "opt", "max"):
        feeds[which] = _dummy_feed(input_specs, shapes, which)
        runs[which] = dict(zip(names, sess.run(names, feeds[which]), strict=True))
    known = {**{s["name"]: s for s in input_specs}}
    parts: list[Part] = []
    inits = {t.name: t for t in graph.initializer}
    graph_out = {o.name: o for o in graph.output}
    for p in ("vision", "text", "fusion"):
        part_inputs = [x for x in inputs[p] if x not in inits]
        used_inits = [inits[x] for i in nodes[p] for x in graph.node[i].input if x in inits]
        used_inits = list({t.name: t for t in used_inits}.values())
        vi_in, vi_out, prof = [], [], {}
        for x in part_inputs:
            if x in known:
                vi_in.append(next(v for v in graph.input if v.name == x))
                prof[x] = shapes[x]
            else:
                arrays = [runs[w][x] for w in ("min", "opt", "max")]
                vi_in.append(_value_info(x, arrays, axis_ranges))
                prof[x] = {w: list(runs[w][x].shape) for w in ("min", "opt", "max")}
        for x in outputs[p]:
            vi_out.append(graph_out[x] if x in graph_out else _value_info(x, [runs[w][x] for w in ("min", "opt", "max")], axis_ranges))
        sub = helper.make_model(helper.make_graph([graph.node[i] for i in nodes[p]], f"{graph.name}_{p}", vi_in, vi_out, used_inits),
                                opset_imports=list(model.opset_import))
        sub.ir_version = model.ir_version
        in_specs = [{"name": x, "dtype": str(runs["opt"][x].dtype) if x in runs["opt"] else str(known[x]["dtype"]),
                     "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]} for x, v in zip(part_inputs, vi_in,
                                                                                                            strict=True)]
        out_specs = [{"name": x, "dtype": str(runs["opt"][x].dtype),
                      "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]} for x, v in zip(outputs[p], vi_out,
                                                                                                          strict=True)]
        parts.append(Part(p, sub, part_inputs, list(outputs[p]), prof, in_specs, out_specs))
    _check_chain(parts, feeds["opt"], runs["opt"], [o.name for o in graph.output], atol)
    return parts


def _check_chain(parts: Sequence[Part], feed: dict[str, np.ndarray], reference: dict[str, np.ndarray], outputs: Sequence[str],
                 atol: float) -> None:
    values = dict(feed)
    for part in parts:
        sess = _ort_session(part.model)
        got = sess.run(part.outputs, {x: values[x] for x in part.inputs})
        values.update(zip(part.outputs, got, strict=True))
    for name in outputs:
        ref = reference[name].astype(np.float64)
        err = float(np.max(np.abs(values[name].astype(np.float64) - ref))) if ref.size else 0.0
        scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
        if err > atol * scale:
            raise EngineError(f"split parts do not reproduce output '{name}' (max abs diff {err:.3g})",
                              "set split_engines: false for this target and report the model", code="EF853")
        log.info("split check %s: max abs diff %.3g", name, err)
