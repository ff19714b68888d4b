"""Verification and export errors on small models of our own (fast: no zoo export here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgefuse.errors import ExportError, VerificationError
from edgefuse.export.exporter import export_model
from edgefuse.export.onnx_export import export_onnx, torch_reference
from edgefuse.export.spec import CHECK_ARGMAX, CHECK_BOX, AxisRange, ExportSpec, TensorSpec, Tolerance, image_text_spec
from edgefuse.export.verify import compare_output, make_cases, verify_onnx

torch.set_num_threads(1)


# ---------------------------------------------------------------------------- metrics
def test_compare_measures_abs_rel_cosine():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 10)).astype(np.float32)
    got = ref.copy()
    got[2, 3] += 1e-3
    c = compare_output("x", ref, got, Tolerance(atol=1e-4, rtol=0.0, min_cosine=0.9))
    assert c.max_abs == pytest.approx(1e-3, rel=1e-3)
    assert c.max_rel == pytest.approx(1e-3 / np.abs(ref).max(), rel=1e-3)
    assert 0.999 < c.cosine < 1.0
    assert not c.ok and "max abs error" in c.reason
    assert compare_output("x", ref, got, Tolerance(atol=2e-3, rtol=0.0, min_cosine=0.9)).ok


def test_argmax_flip_fails_but_tie_within_atol_passes():
    ref = np.array([[0.0, 1.0, 0.5], [2.0, 2.00001, 0.0]], np.float32)
    flipped = ref.copy()
    flipped[0] = [1.2, 1.0, 0.5]  # a real flip: margin 1.0 in PyTorch
    c = compare_output("vqa_logits", ref, flipped, Tolerance(atol=0.5, rtol=0.0, min_cosine=0.0, check=CHECK_ARGMAX))
    assert not c.ok and c.agreement == 0.5 and "decision differs on 1 of 2" in c.reason
    tie = ref.copy()
    tie[1] = [2.00002, 2.00001, 0.0]  # PyTorch's top-2 are 1e-5 apart: a tie, not a miss
    c = compare_output("vqa_logits", ref, tie, Tolerance(atol=1e-4, rtol=0.0, min_cosine=0.0, check=CHECK_ARGMAX))
    assert c.ok and c.agreement == 1.0


def test_box_iou_check():
    ref = np.array([[0.1, 0.1, 0.5, 0.5]], np.float32)
    shifted = ref + np.array([[0.05, 0, 0, 0]], np.float32)  # IoU = 0.45*0.5 / (0.25 + 0.25 - 0.225) = 0.818
    c = compare_output("box", ref, shifted, Tolerance(atol=1.0, rtol=0.0, min_cosine=0.0, check=CHECK_BOX, min_iou=0.99))
    assert not c.ok and c.min_iou == pytest.approx(0.45 * 0.5 / (0.5 - 0.225), rel=1e-5)


# ---------------------------------------------------------------------------- tiny models
class TinyFusion(nn.Module):
    """Text attends to image patches with hand-written attention; LayerNorm; two heads."""

    def __init__(self, vocab: int = 50, dim: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.ln = nn.LayerNorm(dim)
        self.patch = nn.Conv2d(3, dim, 8, 8)
        self.q, self.k = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.cls, self.box = nn.Linear(dim, 5), nn.Linear(dim, 4)

    def forward(self, pixel_values, input_ids, attention_mask):
        img = self.patch(pixel_values).flatten(2).transpose(1, 2)
        t = self.ln(self.emb(input_ids))
        a = torch.softmax(self.q(t) @ self.k(img).transpose(1, 2) / 4.0, -1) @ img
        m = attention_mask.unsqueeze(-1).float()
        p = (a * m).sum(1) / m.sum(1)
        return {"vqa_logits": self.cls(p), "box": torch.sigmoid(self.box(p))}


def tiny_spec(family: str = "tiny") -> ExportSpec:
    return image_text_spec(family, 16, 50, 12, [TensorSpec("vqa_logits", "float32", ("batch", 5)),
                                                 TensorSpec("box", "float32", ("batch", 4))], tasks=["vqa", "grounding"])


def test_tiny_model_exports_dynamic_and_verifies(tmp_path):
    import onnx

    torch.manual_seed(0)
    model, spec = TinyFusion().eval(), tiny_spec()
    path = export_onnx(model, spec, tmp_path / "m.onnx")
    g = onnx.load(str(path)).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in g.input}
    assert dims == {"pixel_values": ["batch", 3, 16, 16], "input_ids": ["batch", "text_length"],
                    "attention_mask": ["batch", "text_length"]}
    assert [n.op_type for n in g.node].count("LayerNormalization") == 1
    cases = make_cases(spec)
    assert all(c.feed["input_ids"].shape != (spec.trace_shape["batch"], spec.trace_shape["text_length"]) for c in cases)
    checks = verify_onnx(torch_reference(model, spec), path, spec, cases)
    assert len(checks) == 2 * len(cases) and all(c.ok for c in checks)
    assert max(c.max_abs for c in checks) < 1e-4


class LegacyMHA(nn.Module):
    """nn.MultiheadAttention: the legacy TorchScript exporter bakes the traced length into Reshapes."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.mha = nn.MultiheadAttention(16, 2, batch_first=True)
        self.out = nn.Linear(16, 5)

    def forward(self, pixel_values, input_ids, attention_mask):
        x = self.emb(input_ids)
        y, _ = self.mha(x, x, x, key_padding_mask=attention_mask == 0, need_weights=False)
        return {"vqa_logits": self.out(y.mean(1) + pixel_values.mean((1, 2, 3))[:, None])}


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_legacy_export_with_baked_shapes_fails_verification(tmp_path):
    torch.manual_seed(0)
    model = LegacyMHA().eval()
    spec = image_text_spec("legacy", 16, 50, 12, [TensorSpec("vqa_logits", "float32", ("batch", 5))], tasks=["vqa"])
    feed = spec.example_inputs(spec.trace_shape, np.random.default_rng(0))
    args = tuple(torch.from_numpy(feed[n]) for n in spec.input_names)
    path = tmp_path / "legacy.onnx"
    with torch.enable_grad():  # the legacy exporter cannot trace MHA's fast path under no_grad
        torch.onnx.export(model, args, str(path), dynamo=False, opset_version=18, input_names=spec.input_names,
                          output_names=spec.output_names, dynamic_axes=spec.dynamic_axes())
    with pytest.raises(VerificationError) as ei:
        verify_onnx(torch_reference(model, spec), path, spec, make_cases(spec))
    assert ei.value.code == "EF413"
    assert "input_ids[1, 4]" in ei.value.message  # names the shape that failed


# ---------------------------------------------------------------------------- factories for export_model
class BakedLength(nn.Module):
    """Adds a fixed-length positional table: the trace fixes text_length to its size."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.pos = nn.Parameter(torch.randn(1, 32, 8))
        self.out = nn.Linear(8, 5)

    def forward(self, pixel_values, input_ids, attention_mask):
        x = self.emb(input_ids) + self.pos[:, :11]  # 11 = the trace length, written as a constant
        return {"vqa_logits": self.out(x.mean(1)) + pixel_values.mean()}


def baked_factory():
    spec = image_text_spec("baked", 16, 50, 12, [TensorSpec("vqa_logits", "float32", ("batch", 5))], tasks=["vqa"])
    assert spec.trace_shape["text_length"] == 11
    return BakedLength().eval(), spec


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent Python control flow
            return {"y": self.fc(x)}
        return {"y": x}


class Eigen(nn.Module):
    def forward(self, x):
        return {"y": torch.linalg.eigh(x @ x.transpose(-1, -2))[0]}


def _vector_spec(family: str, out_dim: int) -> ExportSpec:
    return ExportSpec(family=family, inputs=[TensorSpec("x", "float32", ("batch", 4, 4))],
                      outputs=[TensorSpec("y", "float32", ("batch", 4, out_dim) if out_dim else ("batch", 4))],
                      example_inputs=lambda s, rng: {"x": rng.standard_normal((s["batch"], 4, 4)).astype(np.float32)},
                      axes={"batch": AxisRange(1, 16)}, trace_shape={"batch": 2}, verify_shapes=[{"batch": 1}, {"batch": 5}])


class _Wrapped(nn.Module):
    """A parent module, so the error has to name the submodule, not the root."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.block = inner

    def forward(self, x):
        return self.block(x)


def branchy_factory():
    return _Wrapped(Branchy()), _vector_spec("branchy", 4)


def eigen_factory():
    return Eigen(), _vector_spec("eigen", 0)


def test_baked_shape_is_fatal_and_publishes_nothing(tmp_path):
    out = tmp_path / "baked-fp32"
    with pytest.raises(VerificationError) as ei:
        export_model("test_export_verify:baked_factory", out)
    assert ei.value.code in ("EF412", "EF413")
    assert "text_length" in ei.value.message or "input_ids" in ei.value.message
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no half-written temp folder either


def test_data_dependent_control_flow_names_the_module(tmp_path):
    with pytest.raises(ExportError) as ei:
        export_model("test_export_verify:branchy_factory", tmp_path / "o")
    assert ei.value.code == "EF403"
    assert "Branchy ('block')" in ei.value.message and "if x.sum() > 0" in ei.value.message
    assert not (tmp_path / "o").exists()


def test_unsupported_op_is_named(tmp_path):
    with pytest.raises(ExportError) as ei:
        export_model("test_export_verify:eigen_factory", tmp_path / "o")
    assert ei.value.code == "EF404" and "aten._linalg_eigh" in ei.value.message
    assert not (tmp_path / "o").exists()


def tiny_factory():
    torch.manual_seed(0)
    return TinyFusion().eval(), tiny_spec("tiny-factory")


def test_interrupted_export_leaves_nothing_that_looks_finished(tmp_path, monkeypatch):
    """Ctrl-C during verification (after model.onnx was written to the staging folder)."""
    import edgefuse.export.exporter as exporter

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(exporter, "verify_onnx", interrupt)
    out = tmp_path / "tiny-fp32"
    with pytest.raises(KeyboardInterrupt):
        export_model("test_export_verify:tiny_factory", out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_pytorch_failure_on_a_case_is_a_verification_error(tmp_path):
    """Token ids beyond the model's vocabulary: PyTorch raises; the export names the case instead."""
    from edgefuse.export.verify import Case

    torch.manual_seed(0)
    model, spec = TinyFusion(vocab=50).eval(), tiny_spec()
    path = export_onnx(model, spec, tmp_path / "m.onnx")
    feed = spec.example_inputs({"batch": 2, "text_length": 5}, np.random.default_rng(0))
    feed["input_ids"][0, 1] = 999
    with pytest.raises(VerificationError) as ei:
        verify_onnx(torch_reference(model, spec), path, spec, [Case("museum batch=2", feed)])
    assert ei.value.code in ("EF413", "EF416") and "museum batch=2" in ei.value.message


def test_opset_17_keeps_layernorm_one_node_and_older_is_refused(tmp_path):
    import onnx

    torch.manual_seed(0)
    model, spec = TinyFusion().eval(), tiny_spec()
    m = onnx.load(str(export_onnx(model, spec, tmp_path / "m17.onnx", opset=17)))
    assert next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert [n.op_type for n in m.graph.node].count("LayerNormalization") == 1
    with pytest.raises(ExportError) as ei:
        export_onnx(model, spec, tmp_path / "m16.onnx", opset=16)
    assert ei.value.code == "EF406" and not (tmp_path / "m16.onnx").exists()
