"""A tiny transformer-shaped artifact for the quantization tests (builds in milliseconds).

One fusion block over [image patches; text tokens] with the real contract's inputs and outputs:
Conv patch embedding, embedding table, Q/K/V/O linears, attention-score MatMuls with an
additive mask and Softmax, residual adds + LayerNorm, an FFN, VQA/ITM heads and a sigmoid box
head, plus the [CLS]->patch attention map. Node metadata carries module scopes like the dynamo
exporter's, so quantizer groups get module names. `outliers` multiplies one input channel of
the named linears by a large factor and divides the weight row back: the FP32 function is
unchanged, but per-tensor INT8 activations then crush the other channels (the LLM-outlier
failure), which is what the accuracy-budget test needs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

D, PATCH, S = 32, 16, 64
P = (S // PATCH) ** 2  # 16 patches


def _scope(node: onnx.NodeProto, *mods: str) -> onnx.NodeProto:
    node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=repr(["", *mods, node.name]))
    return node


def build_tiny_model(seed: int = 0, outliers: dict[str, float] | None = None, big_activation: float | None = None) -> onnx.ModelProto:
    from edgefuse.data.museum import answer_vocabulary
    from edgefuse.data.tokenizer import default_tokenizer

    rng = np.random.default_rng(seed)
    vocab = default_tokenizer().vocab_size
    A = len(answer_vocabulary())
    outliers = outliers or {}
    inits: dict[str, np.ndarray] = {}
    nodes: list[onnx.NodeProto] = []

    def w(name: str, *shape: int, scale: float | None = None) -> str:
        s = scale if scale is not None else 1.0 / np.sqrt(shape[0])
        inits[name] = (rng.standard_normal(shape) * s).astype(np.float32)
        return name

    def c(name: str, value) -> str:
        inits[name] = np.asarray(value)
        return name

    def node(op: str, ins: list[str], outs: list[str], name: str, scope: tuple[str, ...], **attrs) -> str:
        nodes.append(_scope(helper.make_node(op, ins, outs, name=name, **attrs), *scope))
        return outs[0]

    def linear(x: str, name: str, k: int, n: int, scope: tuple[str, ...]) -> str:
        wt = w(f"{name}.weight", k, n)
        if name in outliers:
            f = np.ones(k, np.float32)
            f[0] = outliers[name]
            inits[wt][0, :] /= outliers[name]
            x = node("Mul", [x, c(f"{name}.outlier", f)], [f"{name}_scaled"], f"{name}_outlier_mul", scope)
        y = node("MatMul", [x, wt], [f"{name}_mm"], f"{name}_MatMul", scope)
        return node("Add", [y, w(f"{name}.bias", n, scale=0.02)], [f"{name}_out"], f"{name}_bias", scope)

    # image: Conv patches -> [B, P, D]
    conv = node("Conv", ["pixel_values", w("patch.weight", D, 3, PATCH, PATCH, scale=0.05), w("patch.bias", D, scale=0.02)],
                ["patches4"], "patch_Conv", ("patch",), strides=[PATCH, PATCH])
    flat = node("Reshape", [conv, c("shape_bdp", np.array([0, D, -1], np.int64))], ["patches3"], "patch_Reshape", ("patch",))
    img = node("Transpose", [flat], ["img_tokens"], "patch_Transpose", ("patch",), perm=[0, 2, 1])
    img = node("Add", [img, w("img_pos", 1, P, D, scale=0.1)], ["img_emb"], "img_pos_Add", ("patch",))
    # text: embedding table
    txt = node("Gather", [w("embed.weight", vocab, D, scale=0.5), "input_ids"], ["txt_tokens"], "embed_Gather", ("embed",))
    x = node("Concat", [img, txt], ["tokens"], "tokens_Concat", (), axis=1)
    # additive mask over [patches; text]: (1 - m) * -10000
    mf = node("Cast", ["attention_mask"], ["mask_f"], "mask_Cast", (), to=TensorProto.FLOAT)
    ones = node("Slice", ["mask_f", c("zero", np.array([0], np.int64)), c("one", np.array([1], np.int64)),
                          c("ax1", np.array([1], np.int64))], ["mask_first"], "mask_Slice", ())
    ones = node("Mul", [ones, c("zero_f", np.array(0.0, np.float32))], ["mask_zero"], "mask_zero_Mul", ())
    ones = node("Add", [ones, c("one_f", np.array(1.0, np.float32))], ["mask_one"], "mask_one_Add", ())
    ones = node("Tile", [ones, c("tile_p", np.array([1, P], np.int64))], ["mask_img"], "mask_Tile", ())
    full = node("Concat", [ones, mf], ["mask_all"], "mask_Concat", (), axis=1)
    inv = node("Sub", [c("one_f2", np.array(1.0, np.float32)), full], ["mask_inv"], "mask_Sub", ())
    add_mask = node("Mul", [inv, c("neg", np.array(-10000.0, np.float32))], ["mask_add"], "mask_Mul", ())
    add_mask = node("Unsqueeze", [add_mask, c("ax_1", np.array([1], np.int64))], ["mask_add3"], "mask_Unsqueeze", ())
    # attention block
    sc = ("fusion.0", "fusion.0.attn")
    q = linear(x, "fusion.0.attn.q", D, D, (*sc, "fusion.0.attn.q"))
    k = linear(x, "fusion.0.attn.k", D, D, (*sc, "fusion.0.attn.k"))
    v = linear(x, "fusion.0.attn.v", D, D, (*sc, "fusion.0.attn.v"))
    kt = node("Transpose", [k], ["k_t"], "attn_k_Transpose", sc, perm=[0, 2, 1])
    scores = node("MatMul", [q, kt], ["scores"], "attn_scores_MatMul", sc)
    scores = node("Div", [scores, c("sqrt_d", np.array(np.sqrt(D), np.float32))], ["scores_scaled"], "attn_scale_Div", sc)
    scores = node("Add", [scores, add_mask], ["scores_masked"], "attn_mask_Add", sc)
    probs = node("Softmax", [scores], ["probs"], "attn_Softmax", sc, axis=-1)
    ctx = node("MatMul", [probs, v], ["ctx"], "attn_context_MatMul", sc)
    o = linear(ctx, "fusion.0.attn.o", D, D, (*sc, "fusion.0.attn.o"))
    h = node("Add", [x, o], ["res1"], "res1_Add", ("fusion.0",))
    h = node("LayerNormalization", [h, c("ln1.w", np.ones(D, np.float32)), c("ln1.b", np.zeros(D, np.float32))], ["ln1"],
             "ln1_LayerNorm", ("fusion.0", "fusion.0.ln1"), axis=-1)
    f = linear(h, "fusion.0.ffn.fc1", D, 2 * D, ("fusion.0", "fusion.0.ffn", "fusion.0.ffn.fc1"))
    f = node("Relu", [f], ["ffn_act"], "ffn_Relu", ("fusion.0", "fusion.0.ffn"))
    if big_activation is not None:  # an FP16 hazard: a tensor far above FP16's comfortable range
        f = node("Mul", [f, c("big", np.array(big_activation, np.float32))], ["ffn_big"], "ffn_big_Mul", ("fusion.0", "fusion.0.ffn"))
        f = node("Div", [f, c("big2", np.array(big_activation, np.float32))], ["ffn_back"], "ffn_back_Div", ("fusion.0", "fusion.0.ffn"))
    f = linear(f, "fusion.0.ffn.fc2", 2 * D, D, ("fusion.0", "fusion.0.ffn", "fusion.0.ffn.fc2"))
    h = node("Add", [h, f], ["res2"], "res2_Add", ("fusion.0",))
    h = node("LayerNormalization", [h, c("ln2.w", np.ones(D, np.float32)), c("ln2.b", np.zeros(D, np.float32))], ["ln2"],
             "ln2_LayerNorm", ("fusion.0", "fusion.0.ln2"), axis=-1)
    cls = node("ReduceMean", [h, c("rm_ax", np.array([1], np.int64))], ["tok_mean"], "pool_ReduceMean", (), keepdims=0)
    pooled = linear(cls, "pool", D, D, ("pool",))
    pooled = node("Tanh", [pooled], ["pooled"], "pool_Tanh", ("pool",))
    node("Gemm", [pooled, w("vqa.weight", A, D), w("vqa.bias", A, scale=0.02)], ["vqa_logits"], "vqa_Gemm", ("heads", "heads.vqa"), transB=1)
    node("Gemm", [pooled, w("itm.weight", 2, D), w("itm.bias", 2, scale=0.02)], ["itm_logits"], "itm_Gemm", ("heads", "heads.itm"), transB=1)
    b = node("Gemm", [pooled, w("box.weight", 4, D), w("box.bias", 4, scale=0.02)], ["box_raw"], "box_Gemm", ("heads", "heads.box"), transB=1)
    node("Sigmoid", [b], ["box"], "box_Sigmoid", ("heads", "heads.box"))
    row = node("Gather", [probs, c("cls_idx2", np.array(P, np.int64))], ["cls_probs"], "ground_Gather", ("heads", "heads.ground"), axis=1)
    row = node("Slice", [row, c("s0", np.array([0], np.int64)), c("sP", np.array([P], np.int64)), c("s_ax", np.array([1], np.int64))],
               ["cls_patch_probs"], "ground_Slice", ("heads", "heads.ground"))
    tot = node("ReduceSum", [row, c("rs_ax", np.array([1], np.int64))], ["cls_patch_sum"], "ground_ReduceSum", ("heads", "heads.ground"),
               keepdims=1)
    node("Div", [row, tot], ["grounding_attention"], "ground_Div", ("heads", "heads.ground"))

    graph = helper.make_graph(
        nodes, "tiny-fusion",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, S, S]),
         helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "text_length"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "text_length"])],
        [helper.make_tensor_value_info("vqa_logits", TensorProto.FLOAT, ["batch", A]),
         helper.make_tensor_value_info("itm_logits", TensorProto.FLOAT, ["batch", 2]),
         helper.make_tensor_value_info("box", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("grounding_attention", TensorProto.FLOAT, ["batch", P])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def build_tiny_artifact(folder: Path, seed: int = 0, **kw) -> Path:
    """An FP32 artifact folder (docs/interfaces.md) around `build_tiny_model`."""
    from edgefuse.artifacts import sha256_file
    from edgefuse.data.museum import answer_vocabulary
    from edgefuse.data.tokenizer import default_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(build_tiny_model(seed, **kw), str(folder / "model.onnx"))
    default_tokenizer().save(folder / "tokenizer.json")
    (folder / "answers.json").write_text(json.dumps(answer_vocabulary()))
    manifest = {
        "kind": "onnx", "model": "tiny-fusion", "family": "test", "tasks": ["vqa", "itm", "grounding"], "precision": "fp32",
        "image_size": S, "max_text_length": 32, "opset": 18, "parent": None,
        "files": {"model.onnx": sha256_file(folder / "model.onnx")},
        "created_by": "tests/test_quantize_fixtures.py",
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def test_tiny_model_runs_with_dynamic_text_length(tmp_path: Path) -> None:
    import onnxruntime as ort

    m = build_tiny_model()
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for b, t in ((1, 5), (3, 11)):
        mask = np.ones((b, t), np.int64)
        mask[0, -2:] = 0
        out = sess.run(None, {"pixel_values": rng.standard_normal((b, 3, S, S)).astype(np.float32),
                              "input_ids": rng.integers(0, 50, (b, t)), "attention_mask": mask})
        assert out[0].shape[0] == b and out[3].shape == (b, P)
        np.testing.assert_allclose(out[3].sum(-1), 1.0, rtol=1e-5)
        assert ((out[2] > 0) & (out[2] < 1)).all()
