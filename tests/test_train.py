"""Training: schedule, losses, masking, determinism, resumable checkpoints, typed errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from edgefuse.errors import ConfigError, ModelError, WeightsError  # noqa: E402
from edgefuse.models.train import (  # noqa: E402
    RECIPES,
    Trainer,
    box_giou,
    giou_loss,
    load_checkpoint,
    lr_at,
    mask_tokens,
    recipe,
    render_items,
    train,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_data():
    """Eight train images rendered once (the same arrays feed every trainer below)."""
    from edgefuse.data.museum import answer_vocabulary, generate
    from edgefuse.data.tokenizer import default_tokenizer

    return render_items(generate("train", n=8), default_tokenizer(), answer_vocabulary(), 64, 32)


def tiny(model: str, **kw) -> object:
    base = {"batch_size": 4, "steps": 4, "warmup": 1, "checkpoint_every": 0}
    base.update(kw)
    return recipe(model, **base)


# --------------------------------------------------------------------------- schedule and losses
def test_lr_schedule_warmup_then_cosine():
    total, warm, base = 100, 10, 1e-3
    lrs = [lr_at(s, total, warm, base, min_ratio=0.1) for s in range(total)]
    assert lrs[0] == pytest.approx(base / warm)
    assert all(b > a for a, b in zip(lrs[:warm], lrs[1:warm]))  # linear ramp up
    assert lrs[warm - 1] == pytest.approx(base)
    assert lrs[warm] == pytest.approx(base)  # cosine starts at the peak
    assert all(b <= a for a, b in zip(lrs[warm:], lrs[warm + 1 :]))  # then never rises
    mid = warm + (total - warm) // 2
    assert lrs[mid] == pytest.approx(base * (0.1 + 0.9 * 0.5), rel=1e-6)  # half-way down the cosine
    assert lr_at(total, total, warm, base, 0.1) == pytest.approx(base * 0.1)


def test_giou_matches_hand_computation():
    a = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.2, 0.2], [0.1, 0.1, 0.3, 0.3]])
    b = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.6, 0.6, 0.2, 0.2], [0.1, 0.1, 0.3, 0.3]])
    # overlap: inter 0.0625, union 0.4375, hull 0.5625
    iou0 = 0.0625 / 0.4375
    g0 = iou0 - (0.5625 - 0.4375) / 0.5625
    # disjoint: iou 0, union 0.08, hull 0.8 x 0.8
    g1 = 0.0 - (0.64 - 0.08) / 0.64
    got = box_giou(a, b)
    assert got.tolist() == pytest.approx([g0, g1, 1.0], abs=1e-6)
    assert float(giou_loss(a, b)) == pytest.approx(1.0 - (g0 + g1 + 1.0) / 3, abs=1e-6)
    from edgefuse.models.metrics import box_iou

    assert box_iou(a.numpy(), b.numpy()).tolist() == pytest.approx([iou0, 0.0, 1.0], abs=1e-6)


def test_mask_tokens_masks_real_tokens_only():
    from edgefuse.data.tokenizer import default_tokenizer

    tok = default_tokenizer()
    ids, mask = tok.encode_batch(["a red vase on the left", "a bowl", "a small blue lamp in the middle"], max_length=32)
    ids_t, mask_t = torch.as_tensor(ids), torch.as_tensor(mask)
    inputs, labels = mask_tokens(ids_t, mask_t, 0.15, tok.mask_id, tok.vocab_size, sorted(tok.special_ids),
                                 torch.Generator().manual_seed(0))
    chosen = labels != -100
    assert chosen.any(dim=1).all()  # at least one prediction per row
    assert not chosen[mask_t == 0].any()  # never padding
    for s in tok.special_ids:
        assert not chosen[ids_t == s].any()  # never [CLS]/[SEP]
    assert torch.equal(labels[chosen], ids_t[chosen])
    assert torch.equal(inputs[~chosen], ids_t[~chosen])  # untouched elsewhere


# --------------------------------------------------------------------------- the training step
def _fixed_batch_loss(trainer: Trainer) -> float:
    """Loss on the batch the trainer's RNGs would draw next, without changing the RNGs."""
    rng_state = trainer.rng.bit_generator.state
    mask_state = trainer.mask_gen.get_state()
    with torch.no_grad():
        loss, _ = trainer.micro_batch_loss()
    trainer.rng.bit_generator.state = rng_state
    trainer.mask_gen.set_state(mask_state)
    return float(loss)


def test_one_step_reduces_loss_on_fixed_batch(tiny_data):
    t = Trainer(tiny("museum-single", lr=1e-3, warmup=0), data=tiny_data)
    rng_state, mask_state = t.rng.bit_generator.state, t.mask_gen.get_state()
    before = _fixed_batch_loss(t)
    t.step()
    t.rng.bit_generator.state = rng_state  # the same batch and masks again
    t.mask_gen.set_state(mask_state)
    after = _fixed_batch_loss(t)
    assert after < before, (before, after)


def test_same_seed_same_loss_curve(tiny_data):
    """The full multi-task path (VQA, ITM + mined negatives, grounding, MLM) is deterministic per seed."""
    runs = []
    for seed in (0, 0, 1):
        t = Trainer(tiny("museum-dual", seed=seed, model_overrides={"dropout": 0.1}), data=tiny_data)
        runs.append([t.step()["loss"] for _ in range(3)])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert all(math.isfinite(x) for x in runs[0])


def test_caption_step_runs_and_is_seeded(tiny_data):
    a = Trainer(tiny("museum-caption"), data=tiny_data)
    b = Trainer(tiny("museum-caption"), data=tiny_data)
    la = [a.step()["caption"] for _ in range(2)]
    lb = [b.step()["caption"] for _ in range(2)]
    assert la == lb and all(math.isfinite(x) for x in la)


def test_resume_equals_uninterrupted(tiny_data, tmp_path):
    """Kill a run after its step-2 checkpoint, resume it: same weights and loss curve as one run."""
    cfg = tiny("museum-dual", steps=4, checkpoint_every=2, model_overrides={"dropout": 0.1})
    straight = train(cfg, tmp_path / "straight", data=tiny_data)

    class Stop(Exception):
        pass

    def stop_at_3(rec: dict) -> None:
        if rec["step"] == 3:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, tmp_path / "cut", data=tiny_data, on_step=stop_at_3)
    assert not (tmp_path / "cut" / "model.safetensors").exists()  # nothing final from a cut run
    resumed = train(cfg, tmp_path / "cut", resume=True, data=tiny_data)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    from safetensors.torch import load_file

    w1 = load_file(str(tmp_path / "straight" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert w1.keys() == w2.keys()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    for name in ("config.json", "tokenizer.json", "answers.json", "train_log.json"):
        assert (tmp_path / "cut" / name).exists()
    # the checkpoint is safetensors + JSON, never pickle
    state = json.loads((tmp_path / "cut" / "checkpoint" / "checkpoint.json").read_text())
    assert state["step"] == 4 and state["config"]["model"] == "museum-dual"


def test_slot_auxiliary_head(tiny_data):
    """The optional training-only slot head (loss weight 'slots') pools each patch into exactly one third."""
    weights = {**recipe("museum-gated").loss_weights, "slots": 1.0}
    t = Trainer(recipe("museum-gated", {"loss_weights": weights}, batch_size=4, warmup=1, checkpoint_every=0), data=tiny_data)
    rec = t.step()
    assert math.isfinite(rec["slots"]) and rec["slots"] > 0
    pool = t.aux["slots"].pool
    assert torch.allclose(pool.sum(dim=1), torch.ones(3))
    assert torch.equal((pool > 0).sum(dim=0), torch.ones(pool.shape[1], dtype=torch.long))
    assert tiny_data.slots is not None and (tiny_data.slots[..., 0] < 7).all()


# --------------------------------------------------------------------------- recipes and errors
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_default_recipe_is_the_one_that_trained_the_shipped_weights(name):
    log = json.loads((ROOT / "edgefuse" / "models" / "weights" / name / "train_log.json").read_text())
    assert recipe(name).to_dict() == log["recipe"]


def test_unknown_model_is_a_typed_error():
    with pytest.raises(ModelError) as e:
        recipe("museum-duel")
    assert "museum-dual" in e.value.line()


def test_bad_settings_are_typed_errors():
    with pytest.raises(ConfigError) as e:
        recipe("museum-single", {"dropuot": 0})
    assert e.value.code == "EF120" and "dropout" in e.value.line()
    with pytest.raises(ConfigError):
        recipe("museum-single", steps=0)
    cfg = recipe("museum-single", {"dropout": 0.2, "mlm_prob": 0.3})
    assert cfg.model_overrides == {"dropout": 0.2} and cfg.mlm_prob == 0.3


def test_resume_without_or_with_corrupt_checkpoint(tiny_data, tmp_path):
    t = Trainer(tiny("museum-single"), data=tiny_data)
    with pytest.raises(WeightsError) as e:
        t.resume(tmp_path / "none")
    assert e.value.code == "EF330"
    t.step()
    folder = t.save_checkpoint(tmp_path / "ck")
    (folder / "checkpoint.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(WeightsError) as e:
        load_checkpoint(folder, t.model, t.aux, t.opt, t.rng, t.mask_gen)  # noqa: B018
    assert e.value.code in ("EF331", "EF332")


def test_resume_with_other_recipe_is_refused(tiny_data, tmp_path):
    t = Trainer(tiny("museum-single"), data=tiny_data)
    t.step()
    t.save_checkpoint(tmp_path / "ck")
    other = Trainer(tiny("museum-single", lr=5e-4), data=tiny_data)
    with pytest.raises(ConfigError) as e:
        other.resume(tmp_path / "ck")
    assert "lr" in e.value.line()


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    corrupt = tmp_path / "model.safetensors"
    corrupt.write_bytes(b"not a safetensors file at all")
    for args in (["train", "museum-duel"], ["eval", "museum-single", "--weights", str(corrupt)],
                 ["eval", "museum-single", "--split", "tset"]):
        p = subprocess.run([sys.executable, "-m", "edgefuse", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        lines = [line for line in p.stderr.strip().splitlines() if line.strip()]
        assert len(lines) >= 1 and lines[0].startswith("error EF"), p.stderr
        assert "Traceback" not in p.stderr
