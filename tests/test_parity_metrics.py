"""Parity metrics against hand-computed values; bootstrap coverage on a known case; gates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgefuse.config import GateConfig
from edgefuse.errors import ValidationError
from edgefuse.parity import metrics as M
from edgefuse.parity.catalog import lookup
from edgefuse.parity.gates import FAILED, PASSED, SKIPPED, check_gates, evaluate_gate
from edgefuse.parity.scoring import EvalLabels, TaskOutputs, score


def test_box_iou_hand_computed():
    a = np.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.2, 0.2], [0.1, 0.1, 0.4, 0.2], [0, 0, 0, 0]])
    b = np.array([[0.25, 0.25, 0.5, 0.5], [0.5, 0.5, 0.1, 0.1], [0.1, 0.1, 0.4, 0.2], [0, 0, 0, 0]])
    # overlap 0.25 x 0.25 = 0.0625; union 0.25 + 0.25 - 0.0625 = 0.4375
    np.testing.assert_allclose(M.box_iou(a, b), [0.0625 / 0.4375, 0.0, 1.0, 0.0])


def test_roc_auc_hand_computed_and_ties():
    assert M.roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert M.roc_auc(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.5)
    # 2 positives, 2 negatives: pairs (p, n): (3>1), (3>2), (2=2 -> 0.5), (2>1) -> 3.5 / 4
    assert M.roc_auc(np.array([3.0, 2.0, 2.0, 1.0]), np.array([1, 1, 0, 0])) == pytest.approx(0.875)
    assert math.isnan(M.roc_auc(np.array([1.0, 2.0]), np.array([1, 1])))


def test_bleu4_hand_computed():
    ref = ["The red vase is on the left."]
    # one word differs: precisions 6/7, 5/6, 4/5, 3/4, equal lengths -> (3/7) ** 0.25
    assert M.bleu4(["the red vase is on the right"], [ref]) == pytest.approx((3 / 7) ** 0.25)
    assert M.bleu4(["the red vase is on the left"], [ref]) == pytest.approx(1.0)
    # shorter candidate: all n-grams match, brevity penalty exp(1 - 7/5)
    assert M.bleu4(["the red vase is on"], [ref]) == pytest.approx(math.exp(1 - 7 / 5))
    # no 4-gram match at all -> 0 (no smoothing)
    assert M.bleu4(["vase red the"], [ref]) == 0.0
    # clipping: "the the the the" matches 'the' twice at most
    s = M.bleu_item_stats("the the the the", ref)
    assert s[0] == 2 and s[4] == 4


def test_bleu4_corpus_sums_statistics():
    cands = ["the red vase is on the right", "a blue bowl"]
    refs = [["the red vase is on the left"], ["a blue bowl"]]
    # corpus: 1-gram 9/10, 2-gram 7/8, 3-gram 5/6, 4-gram 3/4 (second caption has none)
    expected = (9 / 10 * 7 / 8 * 5 / 6 * 3 / 4) ** 0.25
    assert M.bleu4(cands, refs) == pytest.approx(expected)


def test_tensor_metrics_hand_computed():
    ref = np.array([[1.0, 2.0]])
    out = np.array([[1.1, 1.9]])
    t = M.tensor_metrics(ref, out)
    assert t["max_abs"] == pytest.approx(0.1)
    assert t["mean_abs"] == pytest.approx(0.1)
    assert t["sqnr_db"] == pytest.approx(10 * math.log10(5 / 0.02))
    assert t["cosine"] == pytest.approx((1.1 + 3.8) / math.sqrt(5 * (1.21 + 3.61)))
    same = M.tensor_metrics(ref, ref)
    assert same["sqnr_db"] == math.inf and same["cosine"] == pytest.approx(1.0) and same["max_abs"] == 0.0


def test_retrieval_hits():
    sim = np.array([[0.9, 0.1, 0.2], [0.8, 0.5, 0.1], [0.3, 0.2, 0.1]])
    # query 0: match best; query 1: match second; query 2: match last
    np.testing.assert_array_equal(M.retrieval_hits(sim, 1), [1, 0, 0])
    np.testing.assert_array_equal(M.retrieval_hits(sim, 2), [1, 1, 0])


def test_bootstrap_interval_covers_true_mean_at_nominal_rate():
    """Known case: Bernoulli(0.3) samples of 200; the 90 % interval covers 0.3 in ~90 % of runs."""
    rng = np.random.default_rng(123)
    runs, n, p = 300, 200, 0.3
    hits = 0
    for r in range(runs):
        x = (rng.random(n) < p).astype(float)
        samples = M.MeanStat(x)(M.bootstrap_indices(n, 400, seed=r))
        lo, hi = M.percentile_interval(samples, 0.90)
        hits += lo <= p <= hi
    coverage = hits / runs
    assert 0.84 <= coverage <= 0.96, coverage


def test_bootstrap_is_seeded_and_paired():
    idx1 = M.bootstrap_indices(50, 100, seed=7)
    idx2 = M.bootstrap_indices(50, 100, seed=7)
    np.testing.assert_array_equal(idx1, idx2)
    x = np.linspace(0, 1, 50)
    p = M.paired_bootstrap(M.MeanStat(x), M.MeanStat(x), idx1)
    np.testing.assert_array_equal(p.reference_samples, p.value_samples)  # same items -> zero-width drop


def _synthetic(n: int = 120, flip: int = 0, seed: int = 0):
    """Reference and artifact outputs; the artifact flips `flip` VQA answers."""
    rng = np.random.default_rng(seed)
    ans = rng.integers(0, 5, n)
    ref_logits = rng.normal(size=(n, 5))
    ref_logits[np.arange(n), ans] += 3.0  # reference mostly right
    art_logits = ref_logits + rng.normal(scale=1e-3, size=ref_logits.shape)
    for i in range(flip):
        art_logits[i, ans[i]] = -10.0
    itm_lab = rng.integers(0, 2, n)
    ref_itm = np.stack([np.zeros(n), np.where(itm_lab == 1, 2.0, -2.0) + rng.normal(size=n)], 1)
    gt = np.clip(rng.uniform(0.1, 0.4, (n, 4)), 0, 1)
    ref_box = gt + rng.normal(scale=0.02, size=gt.shape)
    att = rng.dirichlet(np.ones(16), n)
    labels = EvalLabels(vqa_answer=ans, itm_label=itm_lab, boxes=gt, caption_refs=[["a red vase"], ["a blue bowl"]])
    ref = TaskOutputs(tensors={"vqa_logits": ref_logits, "itm_logits": ref_itm, "box": ref_box, "grounding_attention": att},
                      retrieval=rng.normal(size=(8, 8)) + 3 * np.eye(8), captions=["a red vase", "a blue cup"])
    art = TaskOutputs(tensors={"vqa_logits": art_logits, "itm_logits": ref_itm + 1e-4, "box": ref_box + 1e-4,
                               "grounding_attention": att}, retrieval=ref.retrieval + 1e-4, captions=["a red vase", "a blue bowl"])
    return labels, ref, art


def test_score_synthetic_measures_drops():
    labels, ref, art = _synthetic(flip=12)
    res = score(labels, ref, art, resamples=300, seed=0)
    ref_acc = (ref.tensors["vqa_logits"].argmax(1) == labels.vqa_answer).mean() * 100
    art_acc = (art.tensors["vqa_logits"].argmax(1) == labels.vqa_answer).mean() * 100
    m = res["vqa_accuracy"]
    assert m.reference == pytest.approx(ref_acc) and m.value == pytest.approx(art_acc)
    assert m.drop == pytest.approx(ref_acc - art_acc) and m.drop > 0
    assert m.drop_ci[0] <= m.drop <= m.drop_ci[1]
    agree = (ref.tensors["vqa_logits"].argmax(1) == art.tensors["vqa_logits"].argmax(1)).mean()
    assert res["vqa_agreement"].value == pytest.approx(agree)
    assert res["vqa_agreement"].drop == pytest.approx(1 - agree)
    assert res["grounding_attention_cosine"].value == pytest.approx(1.0)
    assert res["caption_agreement"].value == pytest.approx(0.5)
    assert res["caption_exact_match"].reference == pytest.approx(50.0) and res["caption_exact_match"].value == pytest.approx(100.0)
    assert res["caption_exact_match"].drop == pytest.approx(-50.0)  # the artifact is better here: negative drop
    assert res["tensor.box.max_abs"].value == pytest.approx(1e-4, rel=1e-6)
    assert res["tensor.box.sqnr_db"].drop is None  # the reference's own SQNR is infinite
    for k in ("itm_auc", "retrieval_i2t_r1", "retrieval_t2i_r5", "grounding_miou", "grounding_iou50", "caption_bleu4"):
        assert k in res


def test_gates_pass_fail_confidence_and_skip():
    labels, ref, art = _synthetic(flip=12)
    res = score(labels, ref, art, resamples=500, seed=0)
    drop = res["vqa_accuracy"].drop
    tasks, outs = ["vqa", "itm", "grounding"], list(ref.tensors)
    assert evaluate_gate(GateConfig("vqa_accuracy", max_drop=drop + 0.01), "a", res, tasks, outs).status == PASSED
    assert evaluate_gate(GateConfig("vqa_accuracy", max_drop=drop - 0.01), "a", res, tasks, outs).status == FAILED
    # at 95 % the upper bound of the drop is above the point estimate: the same limit now fails
    g = evaluate_gate(GateConfig("vqa_accuracy", max_drop=drop + 0.01, confidence=0.95), "a", res, tasks, outs)
    assert g.status == FAILED and g.checks[0].observed > drop and "upper 95% bound" in g.message
    assert evaluate_gate(GateConfig("vqa_agreement", min_value=0.95), "a", res, tasks, outs).status == FAILED  # 90 %
    assert evaluate_gate(GateConfig("vqa_agreement", min_value=0.85), "a", res, tasks, outs).status == PASSED
    assert evaluate_gate(GateConfig("tensor.box.cosine", min_value=0.999), "a", res, tasks, outs).status == PASSED
    rel = evaluate_gate(GateConfig("vqa_accuracy", max_relative_drop=0.5), "a", res, tasks, outs)
    assert rel.status == PASSED and rel.checks[0].observed == pytest.approx(drop / res["vqa_accuracy"].reference)
    skipped = evaluate_gate(GateConfig("caption_bleu4", max_drop=1.0), "a", {}, tasks, outs)
    assert skipped.status == SKIPPED and "no captioning task" in skipped.message
    with pytest.raises(ValidationError) as ei:
        evaluate_gate(GateConfig("tensor.logits.cosine", min_value=0.9), "a", res, tasks, outs)
    assert ei.value.code == "EF905" and "vqa_logits" in ei.value.hint


def test_unknown_or_unjudgeable_gates_are_errors():
    with pytest.raises(ValidationError) as ei:
        check_gates([GateConfig("vqa_acuracy", max_drop=1.0)])
    assert ei.value.code == "EF902" and "vqa_accuracy" in ei.value.hint
    with pytest.raises(ValidationError, match="unknown tensor statistic"):
        check_gates([GateConfig("tensor.box.cosin", min_value=0.9)])
    with pytest.raises(ValidationError, match="infinite"):
        check_gates([GateConfig("tensor.box.sqnr_db", max_drop=3.0)])
    with pytest.raises(ValidationError, match="min_value"):
        check_gates([GateConfig("tensor.box.max_abs", min_value=0.1)])
    with pytest.raises(ValidationError, match="confidence"):
        check_gates([GateConfig("vqa_accuracy", max_drop=1.0, confidence=1.5)])
    assert [d.name for d in check_gates([GateConfig("tensor.vqa_logits.sqnr_db", min_value=30)])] == ["tensor.vqa_logits.sqnr_db"]
    assert lookup("itm_auc").unit == "pt"


def test_resampled_sums_equal_direct_recomputation():
    """The count-matrix shortcut for tensor metrics and BLEU gives what recomputing on the resample gives."""
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(20, 5))
    out = ref + rng.normal(scale=0.1, size=ref.shape)
    rows = M.tensor_item_stats(ref, out)
    idx = M.bootstrap_indices(20, 7, seed=1)
    for stat in M.TENSOR_STATS:
        got = M.TensorStat(rows, stat)(idx)
        want = [M.tensor_metrics(ref[i], out[i])[stat] for i in idx]
        np.testing.assert_allclose(got, want, rtol=1e-10)
    caps = ["the red vase is on the left", "a blue bowl", "a red vase", "the lamp"] * 5
    refs = [["the red vase is on the right"], ["a blue bowl"], ["a green vase"], ["the lamp in the middle"]] * 5
    stats = np.stack([M.bleu_item_stats(c, r) for c, r in zip(caps, refs)])
    got = M.SummedStat(stats, M.bleu4_from_stats)(idx)
    want = [M.bleu4([caps[k] for k in i], [refs[k] for k in i]) for i in idx]
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_per_question_kind_accuracy():
    labels, ref, art = _synthetic(flip=12)
    kinds = np.array(["colour", "count", "position"])[np.arange(len(labels.vqa_answer)) % 3]
    labels.vqa_kind = kinds.tolist()
    res = score(labels, ref, art, resamples=200, seed=0)
    pred = art.tensors["vqa_logits"].argmax(1)
    for k in ("colour", "count", "position"):
        m = res[f"vqa_accuracy[{k}]"]
        want = (pred[kinds == k] == labels.vqa_answer[kinds == k]).mean() * 100
        assert m.value == pytest.approx(want) and m.n == len(kinds)
        assert m.drop_ci[0] <= m.drop <= m.drop_ci[1]
    assert lookup("vqa_accuracy[count]").unit == "pt"
    # the subset mean over a resample equals recomputing it on the resampled items
    idx = M.bootstrap_indices(len(kinds), 5, seed=2)
    got = M.SubsetMeanStat(pred == labels.vqa_answer, kinds == "count")(idx)
    want = [(pred[i][kinds[i] == "count"] == labels.vqa_answer[i][kinds[i] == "count"]).mean() for i in idx]
    np.testing.assert_allclose(got, want)


def test_fixed_batch_feeds_are_filled_and_trimmed():
    """Fixed-shape engines get full batches; the repeated rows never reach the metrics."""
    from edgefuse.data.museum import generate
    from edgefuse.data.tokenizer import default_tokenizer
    from edgefuse.parity.evalset import EvalSet
    from edgefuse.parity.predict import build_feeds, collect

    items = generate("test", n=2)
    ev = EvalSet("t", items, vqa=[(0, "what colour is the vase?", 1), (1, "where is the lamp?", 2), (1, "is there a bowl?", 3)])
    feeds = build_feeds(ev, default_tokenizer(), 64, 32, batch_size=2, pad_to=32, fixed_batch=True)
    shapes = [f["input_ids"].shape for _, f in feeds.batches["vqa"]]
    assert shapes == [(2, 32), (2, 32)]  # the last batch (1 row) is filled to 2
    # a "model" whose output row is its input's first pixel value: rows must come back in item order
    out = collect(lambda f: {"vqa_logits": f["pixel_values"][:, :1, 0, 0]}, feeds, ev)
    want = feeds.pixel_values[[0, 1, 1], :1, 0, 0]
    np.testing.assert_array_equal(out.tensors["vqa_logits"], want)
