"""The shipped weights: load, fit the size limits, and reach their cards' metrics on a test subset.

Each weights/<name>/metrics.json is `edgefuse eval <name> --split test --json` (all 500 test
images) as the card quotes it, plus `subset`: the same metrics on the first N_SUBSET test
images (benchmarks/train_cards.py). Here that subset is measured again: it must match the
stored subset figures within REPEAT_TOL (float differences between CPUs and thread counts
may flip a borderline argmax) and the full-test figures within SUBSET_TOL (the subset's
sampling error).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "edgefuse" / "models" / "weights"
MODELS = ["museum-dual", "museum-single", "museum-gated", "museum-caption"]
N_SUBSET = 40
REPEAT_TOL = 0.02
SUBSET_TOL = 0.12
METRICS = [("vqa", "accuracy"), ("itm", "accuracy"), ("itm", "auc"), ("grounding", "mean_iou"),
           ("grounding", "iou_at_0.5"), ("captioning", "bleu4"), ("captioning", "exact_match")]


@pytest.fixture(scope="module")
def test_items():
    from edgefuse.data.museum import generate

    return generate("test", n=N_SUBSET)


@pytest.mark.parametrize("name", MODELS)
def test_shipped_folder_is_complete_and_small(name):
    folder = WEIGHTS / name
    for f in ("model.safetensors", "config.json", "tokenizer.json", "answers.json", "card.md", "metrics.json"):
        assert (folder / f).is_file(), f
    assert (folder / "model.safetensors").stat().st_size <= 32 * 2**20
    from edgefuse.data.museum import answer_vocabulary
    from edgefuse.data.tokenizer import Tokenizer, default_tokenizer

    assert json.loads((folder / "answers.json").read_text()) == answer_vocabulary()
    assert Tokenizer.load(folder / "tokenizer.json").fingerprint() == default_tokenizer().fingerprint()
    card = (folder / "card.md").read_text()
    assert f"edgefuse train {name}" in card and f"edgefuse eval {name}" in card


@pytest.mark.parametrize("name", MODELS)
def test_shipped_weights_reach_card_metrics_on_subset(name, test_items):
    from edgefuse.models.evaluate import evaluate_model
    from edgefuse.models.zoo import get_entry, load_model

    torch.set_num_threads(1)
    model = load_model(name)
    assert sum(p.numel() for p in model.parameters()) <= 8_000_000
    card = json.loads((WEIGHTS / name / "metrics.json").read_text())
    assert card["images"] == 500 and card["model"] == name
    assert card["subset"]["images"] == N_SUBSET
    got = evaluate_model(model, list(get_entry(name).tasks), test_items)
    checked = 0
    for task, metric in METRICS:
        if task not in card:
            continue
        value = got[task][metric]
        assert abs(value - card["subset"][task][metric]) <= REPEAT_TOL, (task, metric, value, card["subset"][task][metric])
        assert abs(value - card[task][metric]) <= SUBSET_TOL, (task, metric, value, card[task][metric])
        checked += 1
    assert checked >= 1


def test_eval_reads_a_dataset_folder(tmp_path):
    """`edgefuse eval --data DIR` scores the user's own folder format with the same code path."""
    from edgefuse.data.dataset import write_dataset
    from edgefuse.data.museum import generate
    from edgefuse.models.evaluate import evaluate

    write_dataset(generate("test", n=4), tmp_path / "ds")
    res = evaluate("museum-single", data_dir=tmp_path / "ds")
    assert res["images"] == 4 and res["data"] == str(tmp_path / "ds")
    assert res["vqa"]["questions"] > 0 and 0.0 <= res["vqa"]["accuracy"] <= 1.0
