"""`edgefuse inspect`: what is inside an ONNX file or artifact folder (torch-free).

Op histogram, parameter count, file size, inputs/outputs with named axes, opset, and two
export lints: LayerNorm decomposed into ReduceMean/Pow/Sqrt (TensorRT warns it overflows
in FP16) and Reshape/Expand shape constants that hold the traced batch or text length.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from edgefuse.artifacts import MANIFEST_NAME, read_manifest
from edgefuse.errors import ArtifactError


def _dims(value_info: Any) -> list[int | str]:
    return [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?")
            for d in value_info.type.tensor_type.shape.dim]


def _dtype(value_info: Any) -> str:
    import onnx

    return onnx.helper.tensor_dtype_to_np_dtype(value_info.type.tensor_type.elem_type).name


def graph_summary(path: str | Path) -> dict[str, Any]:
    """Op histogram, parameters, size, inputs/outputs and opset of one ONNX file."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and friends
        raise ArtifactError(f"{path.name} is not a readable ONNX file: {str(e).splitlines()[0][:200]}",
                            "re-export it", code="EF605") from e
    g = model.graph
    ops = Counter(n.op_type for n in g.node)
    params = 0
    for init in g.initializer:
        n = 1
        for d in init.dims:
            n *= d
        params += n
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "file": path.name,
        "size_bytes": path.stat().st_size,
        "opset": opset,
        "nodes": len(g.node),
        "parameters": int(params),
        "op_histogram": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "inputs": [{"name": i.name, "dtype": _dtype(i), "shape": _dims(i)} for i in g.input],
        "outputs": [{"name": o.name, "dtype": _dtype(o), "shape": _dims(o)} for o in g.output],
        "layer_norm_nodes": ops.get("LayerNormalization", 0),
        "decomposed_layer_norm": ops.get("LayerNormalization", 0) == 0 and ops.get("ReduceMean", 0) >= 2 and ops.get("Sqrt", 0) > 0,
    }


def constant_shape_values(path: str | Path) -> list[tuple[str, list[int]]]:
    """(node, values) of Reshape/Expand/Tile/ConstantOfShape shape inputs that are constants.

    A constant holding the traced batch or text length is how a legacy export bakes shapes.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    consts: dict[str, list[int]] = {}
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.INT64 and len(init.dims) <= 1:
            consts[init.name] = numpy_helper.to_array(init).reshape(-1).tolist()
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == onnx.TensorProto.INT64 and len(a.t.dims) <= 1:
                    consts[n.output[0]] = numpy_helper.to_array(a.t).reshape(-1).tolist()
    out = []
    for n in model.graph.node:
        if n.op_type in ("Reshape", "Expand", "Tile", "ConstantOfShape") and len(n.input) >= (1 if n.op_type == "ConstantOfShape" else 2):
            shape_in = n.input[0] if n.op_type == "ConstantOfShape" else n.input[1]
            if shape_in in consts:
                out.append((n.name or n.op_type, consts[shape_in]))
    return out


def inspect_artifact(path: str | Path) -> dict[str, Any]:
    """Manifest (if any) plus a graph summary per ONNX file of a folder or of one file."""
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"{p} does not exist", "point at a folder written by `edgefuse export` or an .onnx file", code="EF606")
    if p.is_file():
        manifest = read_manifest(p.parent) if (p.parent / MANIFEST_NAME).is_file() else None
        files = [p]
    else:
        manifest = read_manifest(p)
        files = sorted(f for f in p.iterdir() if f.suffix == ".onnx")
        if not files:
            raise ArtifactError(f"no .onnx file in {p}", "point at a folder written by `edgefuse export`", code="EF606")
    graphs = {f.name: graph_summary(f) for f in files}
    specs = (manifest or {}).get("export_specs") or {}
    for name, g in graphs.items():
        trace = (specs.get(name) or {}).get("trace_shape") or {}
        if "text_length" in trace:  # constants equal to the traced text length are how shapes get baked
            t = int(trace["text_length"])
            g["suspect_baked_shapes"] = [node for node, values in constant_shape_values(p if p.is_file() else p / name)
                                         if t in values]
    return {"path": str(p), "manifest": manifest, "graphs": graphs}
