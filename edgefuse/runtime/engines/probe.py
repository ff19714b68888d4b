"""A tiny dual-tower image-text fusion graph written with onnx.helper, as an artifact folder.

Why: `edgefuse doctor --probe` and the engine/bench tests need a real ONNX model with the
project's interface (pixel_values / input_ids / attention_mask -> vqa_logits, named dynamic
axes `batch` and `text_length`) that builds in seconds, without torch and without the zoo.
It holds the ops that matter to TensorRT: patch embedding (Reshape/Transpose/MatMul),
embedding Gather, LayerNormalization, masked multi-head self- and cross-attention
(MatMul/Softmax), GELU-free FFN (Relu) and a pooled head. FP32, FP16 (strongly typed: FP16
weights and compute, FP32 at the boundary) and INT8 QDQ (per-tensor symmetric Q/DQ in front of
every MatMul) variants share the same weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgefuse.artifacts import atomic_write_bytes, sha256_file, staged_dir, tool_versions, write_manifest

IMAGE_SIZE = 32
PATCH = 8
WIDTH = 32
HEADS = 2
VOCAB = 64
ANSWERS = 8
MAX_TEXT = 32


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_patch_dim = 3 * PATCH * PATCH

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    out = {
        "patch_w": w(n_patch_dim, WIDTH),
        "tok_emb": (rng.standard_normal((VOCAB, WIDTH)) * 0.5).astype(np.float32),
        "pos_emb": (rng.standard_normal((MAX_TEXT, WIDTH)) * 0.1).astype(np.float32),
        "head_w": w(WIDTH, ANSWERS),
        "ln_g": np.ones(WIDTH, np.float32),
        "ln_b": np.zeros(WIDTH, np.float32),
    }
    for blk in ("v_self", "t_self", "t_cross"):
        for p in ("q", "k", "v", "o"):
            out[f"{blk}_{p}"] = w(WIDTH, WIDTH)
    out["ffn_1"] = w(WIDTH, 2 * WIDTH)
    out["ffn_2"] = w(2 * WIDTH, WIDTH)
    return out


class _Graph:
    """Small helper that names nodes and keeps initializers, casting to the compute dtype."""

    def __init__(self, precision: str) -> None:
        from onnx import TensorProto

        self.precision = precision
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.n = 0
        self.ftype = TensorProto.FLOAT16 if precision == "fp16" else TensorProto.FLOAT
        self.np_ftype = np.float16 if precision == "fp16" else np.float32

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, base: str, value: np.ndarray, keep_dtype: bool = False) -> str:
        from onnx import numpy_helper

        if not keep_dtype and value.dtype == np.float32:
            value = value.astype(self.np_ftype)
        nm = self.name(base)
        self.inits.append(numpy_helper.from_array(value, nm))
        return nm

    def op(self, op_type: str, inputs: list[str], base: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = self.name(base or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"n_{out}", **attrs))
        return out

    def qdq(self, x: str, scale: float) -> str:
        """Quantize-dequantize (INT8, symmetric, per tensor) when building the int8 variant."""
        if self.precision not in ("int8", "fp8"):
            return x
        from onnx import TensorProto, helper

        s = self.const("scale", np.array(scale if self.precision == "int8" else scale * 127.0 / 448.0, np.float32))
        if self.precision == "int8":
            z = self.const("zp", np.array(0, np.int8), keep_dtype=True)
        else:  # FP8 E4M3 (max 448): the zero point's type picks the quantized type
            z = self.name("zp")
            self.inits.append(helper.make_tensor(z, TensorProto.FLOAT8E4M3FN, [], [0.0]))
        q = self.op("QuantizeLinear", [x, s, z], "q")
        return self.op("DequantizeLinear", [q, s, z], "dq")

    def matmul(self, x: str, w: np.ndarray, base: str, act_scale: float = 0.05) -> str:
        if self.precision in ("int8", "fp8"):
            ws = float(np.abs(w).max() / 127.0)
            w_name = self.qdq(self.const(base + "_w", w), ws)
            return self.op("MatMul", [self.qdq(x, act_scale), w_name], base)
        return self.op("MatMul", [x, self.const(base + "_w", w)], base)


def _attention(g: _Graph, W: dict[str, np.ndarray], blk: str, x: str, ctx: str, mask_bias: str | None) -> str:
    """Multi-head attention: x attends to ctx; mask_bias [batch, 1, 1, ctx_len] added to scores."""
    head_dim = WIDTH // HEADS
    split_shape = g.const("split_shape", np.array([0, -1, HEADS, head_dim], np.int64), keep_dtype=True)

    def heads(t: str) -> str:
        return g.op("Transpose", [g.op("Reshape", [t, split_shape])], perm=[0, 2, 1, 3])

    q = heads(g.matmul(x, W[f"{blk}_q"], f"{blk}_q"))
    k = heads(g.matmul(ctx, W[f"{blk}_k"], f"{blk}_k"))
    v = heads(g.matmul(ctx, W[f"{blk}_v"], f"{blk}_v"))
    kt = g.op("Transpose", [k], perm=[0, 1, 3, 2])
    scores = g.op("MatMul", [g.qdq(q, 0.05), g.qdq(kt, 0.05)], f"{blk}_scores")
    scores = g.op("Mul", [scores, g.const("scale", np.array(1.0 / np.sqrt(head_dim), np.float32))])
    if mask_bias is not None:
        scores = g.op("Add", [scores, mask_bias])
    probs = g.op("Softmax", [scores], f"{blk}_probs", axis=-1)
    ctx_out = g.op("MatMul", [g.qdq(probs, 1.0 / 127), g.qdq(v, 0.05)], f"{blk}_ctx")
    merged = g.op("Reshape", [g.op("Transpose", [ctx_out], perm=[0, 2, 1, 3]),
                              g.const("merge_shape", np.array([0, -1, WIDTH], np.int64), keep_dtype=True)])
    out = g.matmul(merged, W[f"{blk}_o"], f"{blk}_o")
    return _layernorm(g, W, g.op("Add", [x, out]))


def _layernorm(g: _Graph, W: dict[str, np.ndarray], x: str) -> str:
    return g.op("LayerNormalization", [x, g.const("ln_g", W["ln_g"]), g.const("ln_b", W["ln_b"])], "ln", axis=-1, epsilon=1e-5)


def build_fusion_onnx(precision: str = "fp32", seed: int = 0) -> Any:
    """The probe model as an onnx.ModelProto (opset 18; 19 for fp8). precision: fp32 | fp16 | int8 | fp8 (QDQ)."""
    import onnx
    from onnx import TensorProto, helper

    if precision not in ("fp32", "fp16", "int8", "fp8"):
        raise ValueError(f"unknown precision {precision}")
    W = _weights(seed)
    g = _Graph(precision)
    n_patch = (IMAGE_SIZE // PATCH) ** 2

    # vision tower: patches -> linear -> self-attention
    pix = "pixel_values"
    if precision == "fp16":
        pix = g.op("Cast", [pix], "pix16", to=TensorProto.FLOAT16)
    p = g.op("Reshape", [pix, g.const("pshape", np.array([0, 3, IMAGE_SIZE // PATCH, PATCH, IMAGE_SIZE // PATCH, PATCH], np.int64),
                                       keep_dtype=True)])
    p = g.op("Transpose", [p], perm=[0, 2, 4, 1, 3, 5])
    p = g.op("Reshape", [p, g.const("pflat", np.array([0, n_patch, 3 * PATCH * PATCH], np.int64), keep_dtype=True)])
    img = _layernorm(g, W, g.matmul(p, W["patch_w"], "patch_embed", act_scale=1.0 / 127))
    img = _attention(g, W, "v_self", img, img, None)

    # text tower: embeddings + masked self-attention
    tok = g.op("Gather", [g.const("tok_emb", W["tok_emb"]), "input_ids"], "tok", axis=0)
    seq_len = g.op("Slice", [g.op("Shape", ["input_ids"]), g.const("one", np.array([1], np.int64), keep_dtype=True),
                             g.const("two", np.array([2], np.int64), keep_dtype=True)])
    pos = g.op("Slice", [g.const("pos_emb", W["pos_emb"]), g.const("zero", np.array([0], np.int64), keep_dtype=True), seq_len,
                         g.const("axis0", np.array([0], np.int64), keep_dtype=True)])
    txt = _layernorm(g, W, g.op("Add", [tok, pos]))
    maskf = g.op("Cast", ["attention_mask"], "maskf", to=g.ftype)
    mask4 = g.op("Unsqueeze", [maskf, g.const("ax12", np.array([1, 2], np.int64), keep_dtype=True)])
    bias = g.op("Mul", [g.op("Sub", [g.const("one_f", np.array(1.0, np.float32)), mask4]),
                        g.const("neg", np.array(-1e4, np.float32))], "mask_bias")
    txt = _attention(g, W, "t_self", txt, txt, bias)

    # fusion: text attends to image, FFN, masked mean pool, VQA head
    fused = _attention(g, W, "t_cross", txt, img, None)
    h = g.op("Relu", [g.matmul(fused, W["ffn_1"], "ffn_1")])
    fused = _layernorm(g, W, g.op("Add", [fused, g.matmul(h, W["ffn_2"], "ffn_2")]))
    m3 = g.op("Unsqueeze", [maskf, g.const("ax2", np.array([2], np.int64), keep_dtype=True)])
    summed = g.op("ReduceSum", [g.op("Mul", [fused, m3]), g.const("ax1", np.array([1], np.int64), keep_dtype=True)], keepdims=0)
    count = g.op("ReduceSum", [maskf, g.const("ax1b", np.array([1], np.int64), keep_dtype=True)], keepdims=1)
    pooled = g.op("Div", [summed, g.op("Max", [count, g.const("eps", np.array(1.0, np.float32))])])
    logits = g.matmul(pooled, W["head_w"], "head")
    if precision == "fp16":
        logits = g.op("Cast", [logits], "logits32", to=TensorProto.FLOAT)
    g.nodes.append(helper.make_node("Identity", [logits], ["vqa_logits"], name="n_out"))

    inputs = [
        helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, IMAGE_SIZE, IMAGE_SIZE]),
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "text_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "text_length"]),
    ]
    outputs = [helper.make_tensor_value_info("vqa_logits", TensorProto.FLOAT, ["batch", ANSWERS])]
    graph = helper.make_graph(g.nodes, f"edgefuse_probe_{precision}", inputs, outputs, g.inits)
    opset = 19 if precision == "fp8" else 18  # FP8 Q/DQ needs opset 19
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgefuse-probe")
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def write_probe_artifact(folder: str | os.PathLike[str], precision: str = "fp32", seed: int = 0, overwrite: bool = True) -> Path:
    """Write the probe model as an artifact folder (model.onnx + manifest.json, docs/interfaces.md)."""
    import onnx

    model = build_fusion_onnx(precision, seed)
    folder = Path(folder)
    with staged_dir(folder, overwrite=overwrite) as tmp:
        atomic_write_bytes(tmp / "model.onnx", model.SerializeToString())
        manifest = {
            "kind": "onnx",
            "model": "edgefuse-probe",
            "family": "dual-stream",
            "tasks": ["vqa"],
            "precision": precision,
            "weights_sha256": None,
            "files": {"model.onnx": sha256_file(tmp / "model.onnx")},
            "opset": 19 if precision == "fp8" else 18,
            "inputs": [
                {"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, IMAGE_SIZE, IMAGE_SIZE]},
                {"name": "input_ids", "dtype": "int64", "shape": ["batch", "text_length"]},
                {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "text_length"]},
            ],
            "outputs": [{"name": "vqa_logits", "dtype": "float32", "shape": ["batch", ANSWERS]}],
            "image_size": IMAGE_SIZE,
            "max_text_length": MAX_TEXT,
            "tool_versions": tool_versions("onnx"),
            "parent": None,
            "created_by": f"edgefuse.runtime.engines.probe.write_probe_artifact(precision={precision!r}, seed={seed})",
            "onnx_ir_version": onnx.IR_VERSION,
        }
        write_manifest(tmp, manifest)
    return folder


def probe_feed(batch: int = 1, text_length: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """A valid random feed for the probe model (also fits any zoo model of the same image size)."""
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, text_length), np.int64)
    mask[:, text_length // 2 + 1:] = 0
    return {
        "pixel_values": rng.uniform(-1, 1, (batch, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32),
        "input_ids": rng.integers(0, VOCAB, (batch, text_length)).astype(np.int64),
        "attention_mask": mask,
    }
