"""Calibration data: sources, deterministic sampling, content-keyed cache, coverage, bad input."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgefuse.calibration import StatsCache, build_calibration, cache_key, check_input_names, sample_pairs, source_pairs
from edgefuse.calibration.reader import FeedReader
from edgefuse.errors import CalibrationError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgefuse.data import museum
    from edgefuse.data.dataset import write_dataset

    out = tmp_path_factory.mktemp("calib") / "data"
    write_dataset(museum.generate("val", n=6), out)
    return out


def test_sampling_is_sorted_seeded_and_deterministic() -> None:
    pairs = source_pairs("museum", 40)
    a = [p.key for p in sample_pairs(pairs, 20, seed=0)]
    b = [p.key for p in sample_pairs(list(reversed(pairs)), 20, seed=0)]
    c = [p.key for p in sample_pairs(pairs, 20, seed=1)]
    assert a == b  # order of the source does not matter
    assert a != c and a == sorted(a)
    assert len(set(a)) == 20


def test_museum_calibration_matches_kiosk_preprocessing() -> None:
    from edgefuse.data.preprocess import Preprocessor

    cs = build_calibration("museum", 12, seed=0)
    assert len(cs.feeds) == 12 and len(cs.pairs) == 12
    p = cs.pairs[3]
    expect = Preprocessor()([p.image], [p.text])
    for k, v in expect.items():
        np.testing.assert_array_equal(cs.feeds[3][k], v)
    cov = cs.coverage
    assert cov["pairs"] == 12 and sum(cov["text_length_histogram"].values()) == 12
    lo, hi = cov["text_length_range"]
    assert lo == min(int(f["attention_mask"].sum()) for f in cs.feeds) and hi == max(int(f["attention_mask"].sum()) for f in cs.feeds)
    assert -1.0 <= cov["input_ranges"]["pixel_values"]["min"] < cov["input_ranges"]["pixel_values"]["max"] <= 1.0
    assert build_calibration("museum", 12, seed=0).data_hash == cs.data_hash
    assert build_calibration("museum", 12, seed=3).data_hash != cs.data_hash


def test_folder_source_and_content_hash(folder: Path, tmp_path: Path) -> None:
    import shutil

    cs = build_calibration(folder, 10, seed=0)
    assert len(cs.feeds) == 10 and cs.coverage["images"] <= 6
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert build_calibration(copy, 10, seed=0).data_hash == cs.data_hash  # keyed by content, not by path
    used = {str(p.image) for p in build_calibration(copy, 10, seed=0).pairs}
    target = Path(sorted(used)[0])
    from PIL import Image

    img = np.asarray(Image.open(target)).copy()
    img[0, 0] = 255 - img[0, 0]
    Image.fromarray(img).save(target)
    assert build_calibration(copy, 10, seed=0).data_hash != cs.data_hash  # one changed pixel -> new key


def test_too_few_samples_warns_with_count(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        cs = build_calibration(folder, 10_000, seed=0)
    assert any(f"only {len(cs.pairs)} calibration pairs available, 10000 asked for" in r.message for r in caplog.records)


def test_bad_folders_are_typed_errors(folder: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CalibrationError) as e:
        build_calibration(empty, 8)
    assert e.value.code == "EF501" and "annotations.jsonl" in e.value.message
    (empty / "annotations.jsonl").write_text("\n")
    with pytest.raises(CalibrationError) as e:
        build_calibration(empty, 8)
    assert e.value.code == "EF502"
    with pytest.raises(CalibrationError) as e:
        build_calibration(tmp_path / "missing", 8)
    assert e.value.code == "EF501"
    # texts whose image is missing
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    (orphan / "annotations.jsonl").write_text('{"image": "images/x.png", "captions": ["a red vase"]}\n')
    with pytest.raises(CalibrationError, match="not found"):
        build_calibration(orphan, 8)
    # an image file that is not an image
    bad = tmp_path / "bad"
    (bad / "images").mkdir(parents=True)
    (bad / "images" / "x.png").write_bytes(b"this is not a png")
    (bad / "annotations.jsonl").write_text('{"image": "images/x.png", "captions": ["a red vase"]}\n')
    with pytest.raises(CalibrationError) as e:
        build_calibration(bad, 8)
    assert e.value.code == "EF505" and "x.png" in e.value.message


def test_input_names_must_match_model() -> None:
    check_input_names(["pixel_values", "input_ids", "attention_mask"], ["pixel_values", "input_ids", "attention_mask"])
    with pytest.raises(CalibrationError) as e:
        build_calibration("museum", 4, model_inputs=["image", "input_ids", "attention_mask"])
    assert e.value.code == "EF506" and "image" in e.value.hint


def test_cache_key_changes_with_data_preprocess_model_and_recipe(tmp_path: Path) -> None:
    base = cache_key("d" * 64, "p" * 16, "m" * 64, {"method": "minmax"})
    others = [cache_key("e" * 64, "p" * 16, "m" * 64, {"method": "minmax"}), cache_key("d" * 64, "q" * 16, "m" * 64, {"method": "minmax"}),
              cache_key("d" * 64, "p" * 16, "n" * 64, {"method": "minmax"}), cache_key("d" * 64, "p" * 16, "m" * 64, {"method": "entropy"})]
    assert len({base, *others}) == 5
    cache = StatsCache(tmp_path / "c")
    assert cache.get(base) is None
    cache.put(base, {"ranges": {"x": [-1.0, 2.0]}}, {"why": "test"})
    assert cache.get(base) == {"ranges": {"x": [-1.0, 2.0]}}
    assert all(cache.get(k) is None for k in others)
    assert StatsCache(None).get(base) is None and StatsCache(None).put(base, {}, {}) is None


def test_feed_reader_yields_each_feed_once_then_rewinds() -> None:
    feeds = [{"x": np.zeros(1)}, {"x": np.ones(1)}]
    r = FeedReader(feeds)
    assert len(r) == 2 and r.get_next() is feeds[0] and r.get_next() is feeds[1] and r.get_next() is None
    r.rewind()
    assert r.get_next() is feeds[0]


def test_calibration_never_imports_torch() -> None:
    code = ("import sys; from edgefuse.calibration import build_calibration; build_calibration('museum', 4); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
