"""Export-friendliness of the zoo by construction: a traced ONNX graph keeps batch, text length
and past length dynamic (nothing baked from the example), and holds no -inf constants.

Uses the fast TorchScript exporter (about 2 s a model); the dynamo path is tested by edgefuse/export.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
np = pytest.importorskip("numpy")

from edgefuse.models import zoo  # noqa: E402

torch.set_num_threads(1)


class _Outputs(torch.nn.Module):
    """dict outputs -> tuple (the TorchScript exporter wants a tuple)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values, input_ids, attention_mask):
        return tuple(self.model(pixel_values, input_ids, attention_mask).values())


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3  # the traced graph records example output shapes; ORT warns, results are right
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _no_infinite_constants(path: Path) -> bool:
    g = onnx.load(str(path))
    arrays = [onnx.numpy_helper.to_array(t) for t in g.graph.initializer]
    arrays += [onnx.numpy_helper.to_array(a.t) for n in g.graph.node if n.op_type == "Constant" for a in n.attribute if a.type == 4]
    return not any(np.issubdtype(a.dtype, np.floating) and np.isinf(a).any() for a in arrays)


@pytest.mark.parametrize("name", ["museum-dual", "museum-single", "museum-gated"])
def test_fusion_model_traces_with_dynamic_axes(name, tmp_path: Path):
    entry = zoo.get_entry(name)
    model = _Outputs(zoo.build_model(name)).eval()
    example = (torch.rand(2, 3, 64, 64), torch.randint(5, 100, (2, 8)), torch.ones(2, 8, dtype=torch.long))
    axes = {"pixel_values": {0: "batch"}, "input_ids": {0: "batch", 1: "text_length"},
            "attention_mask": {0: "batch", 1: "text_length"}}
    path = tmp_path / "model.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(path), dynamo=False, opset_version=18, input_names=list(zoo.INPUT_NAMES),
                          output_names=list(entry.output_names), dynamic_axes=axes)
    assert _no_infinite_constants(path)
    sess = _session(path)
    for batch, length in ((1, 5), (3, 17)):
        pixels = torch.rand(batch, 3, 64, 64) * 2 - 1
        ids = torch.randint(5, 100, (batch, length))
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[-1, length // 2:] = 0
        with torch.no_grad():
            ref = model(pixels, ids, mask)
        got = sess.run(None, {"pixel_values": pixels.numpy(), "input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        for r, g in zip(ref, got):
            assert g.shape == tuple(r.shape)
            assert np.abs(g - r.numpy()).max() < 1e-4


def test_caption_decoder_traces_with_dynamic_past(tmp_path: Path):
    model = zoo.build_model("museum-caption")
    graphs = model.export_modules()
    dec = graphs["decoder"].eval()
    image = model.encode_image(torch.rand(2, 3, 64, 64))
    past = torch.randn(model.num_layers, 2, model.num_heads, 3, model.head_dim)
    axes = {"input_ids": {0: "batch", 1: "new_length"}, "image_tokens": {0: "batch"},
            "past_keys": {1: "batch", 3: "past_length"}, "past_values": {1: "batch", 3: "past_length"},
            "logits": {0: "batch", 1: "new_length"}, "present_keys": {1: "batch", 3: "total_length"},
            "present_values": {1: "batch", 3: "total_length"}}
    path = tmp_path / "decoder.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(dec, (torch.randint(5, 100, (2, 2)), image, past, past.clone()), str(path), dynamo=False, opset_version=18,
                          input_names=list(dec.input_names), output_names=list(dec.output_names), dynamic_axes=axes)
    assert _no_infinite_constants(path)
    sess = _session(path)
    pixels = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        image = model.encode_image(pixels)
        ref = model.generate(pixels, max_length=8)
    pk, pv = (np.zeros((model.num_layers, 3, model.num_heads, 0, model.head_dim), np.float32) for _ in range(2))
    step = np.full((3, 1), model.bos_id, dtype=np.int64)
    seq = [step]
    for _ in range(ref.shape[1] - 1):  # greedy from an empty cache, no eos handling: compare the first columns
        logits, pk, pv = sess.run(None, {"input_ids": step, "image_tokens": image.numpy(), "past_keys": pk, "past_values": pv})
        step = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
        seq.append(step)
    seq = np.concatenate(seq, 1)
    done = np.cumsum(np.concatenate([np.zeros((3, 1), bool), seq[:, :-1] == model.eos_id], 1), 1) > 0
    expected = ref.numpy()
    assert (seq[~done] == expected[~done]).all()
