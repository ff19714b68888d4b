"""Kiosk pipeline plumbing on the tiny contract artifact: answers, batching, grounding, bad input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgefuse.errors import InputError, RunnerError
from test_runtime_fixtures import build_tiny_artifact


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_artifact(tmp_path_factory.mktemp("kiosk") / "tiny")


@pytest.fixture(scope="module")
def kiosk(tiny_folder: Path):
    from edgefuse.runtime.kiosk import KioskPipeline, Limits

    with KioskPipeline(tiny_folder, threads=1, limits=Limits(max_image_pixels=300 * 300, max_question_chars=120,
                                                             max_upload_bytes=200_000)) as k:
        yield k


@pytest.fixture(scope="module")
def scenes():
    from edgefuse.data.museum import generate

    return generate("test", n=3)


def test_ask_matches_direct_runner(kiosk, tiny_folder: Path, scenes) -> None:
    from edgefuse.data.preprocess import preprocess_images
    from edgefuse.runtime.runners import open_runner

    item = scenes[0]
    q = item.questions[0].question
    ans = kiosk.ask(_png(item.image), q, top_k=3)
    ids, mask = kiosk.tokenizer.encode_batch([q], 32)
    with open_runner(tiny_folder, threads=1) as r:
        logits = r.infer({"pixel_values": preprocess_images([item.image], 64), "input_ids": ids, "attention_mask": mask})["vqa_logits"][0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    assert ans.answer == kiosk.answers[int(np.argmax(p))]
    assert ans.confidence == pytest.approx(float(p.max()), abs=1e-5)
    assert len(ans.top_k) == 3 and [c for _, c in ans.top_k] == sorted((c for _, c in ans.top_k), reverse=True)
    # every accepted source type gives the same answer
    assert kiosk.ask(item.image, q).answer == ans.answer
    assert kiosk.ask(Image.fromarray(item.image), q).answer == ans.answer


def test_batch_equals_single(kiosk, scenes) -> None:
    images = [s.image for s in scenes]
    questions = [s.questions[0].question for s in scenes]
    batch = kiosk.ask_batch(images, questions)
    for img, q, b in zip(images, questions, batch, strict=True):
        single = kiosk.ask(img, q)
        assert single.answer == b.answer and single.confidence == pytest.approx(b.confidence, abs=1e-5)


def test_ground_draws_box_in_photo_pixels(kiosk, scenes) -> None:
    item = scenes[1]
    big = np.asarray(Image.fromarray(item.image).resize((256, 192)))
    g = kiosk.ground(_png(big), item.refs[0].phrase)
    x, y, w, h = g.box
    assert all(0.0 <= v <= 1.0 for v in g.box)
    x0, y0, bw, bh = g.box_pixels
    assert (x0, y0) == (round(x * 256), round(y * 192))
    drawn = np.asarray(Image.open(io.BytesIO(g.png)).convert("RGB"))
    assert drawn.shape == (192, 256, 3)
    edge = drawn[y0, x0:x0 + max(1, bw)]  # top edge of the box in the drawing colour
    assert (np.abs(edge.astype(int) - [255, 45, 85]).sum(axis=1) == 0).mean() > 0.9
    assert sum(g.attention) == pytest.approx(1.0, abs=1e-4)


def test_match_is_a_probability(kiosk, scenes) -> None:
    s = kiosk.match(scenes[0].image, scenes[0].captions[0])
    assert 0.0 <= s <= 1.0


@pytest.mark.parametrize(
    "question, code",
    [("", "EF740"), ("   ", "EF740"), ("what colour " * 20, "EF741"), ("what colour is the zebra?", "EF742"),
     ("какого цвета", "EF742")],
)
def test_bad_questions(kiosk, scenes, question: str, code: str) -> None:
    with pytest.raises(InputError) as e:
        kiosk.ask(scenes[0].image, question)
    assert e.value.code == code
    if code == "EF742" and "zebra" in question:
        assert "'zebra'" in e.value.message


def test_known_punctuation_is_fine(kiosk, scenes) -> None:
    assert kiosk.ask(scenes[0].image, "  WHAT colour is\tthe vase?! ").answer in kiosk.answers
    assert kiosk.unknown_words("what's the colour?") == []  # the apostrophe maps to [UNK]: allowed
    assert kiosk.unknown_words("what colour is the vase of the museum") == ["of", "museum"]


def test_bad_images(kiosk, scenes) -> None:
    png = _png(scenes[0].image)
    cases = {
        b"": "EF730",
        b"not an image at all": "EF222",
        png[: len(png) // 2]: "EF223",  # truncated
        _png(np.zeros((400, 400, 3), np.uint8)): "EF224",  # 160k pixels > 90k limit
        b"\x89PNG" + bytes(300_000): "EF731",  # over the upload limit
    }
    for data, code in cases.items():
        with pytest.raises(InputError) as e:
            kiosk.ask(data, "what colour is the vase?")
        assert e.value.code == code, (code, e.value.line())


def test_missing_task_and_caption(tiny_folder: Path, kiosk) -> None:
    with pytest.raises(RunnerError) as e:
        kiosk.caption(np.zeros((64, 64, 3), np.uint8))
    assert e.value.code == "EF751"
    assert kiosk.warm_up()["outputs"] == ["box", "grounding_attention", "itm_logits", "vqa_logits"]
