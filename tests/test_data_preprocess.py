"""Preprocessing: shape, dtype, range, one implementation for every input type, typed errors."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from edgefuse.data import museum
from edgefuse.data.preprocess import (
    PreprocessConfig,
    Preprocessor,
    denormalise,
    load_image,
    preprocess_images,
)
from edgefuse.errors import DataError


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return museum.generate("test", 1)[0].image


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def test_shape_dtype_range(image):
    x = preprocess_images([image, image[:, ::-1]], size=64)
    assert x.shape == (2, 3, 64, 64) and x.dtype == np.float32 and x.flags.c_contiguous
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert preprocess_images([image], size=32).shape == (1, 3, 32, 32)
    assert preprocess_images([]).shape == (0, 3, 64, 64)


def test_normalisation_matches_formula(image):
    x = preprocess_images([image], size=128)  # no resize: pure normalisation
    ref = (image.astype(np.float32) / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(x[0].transpose(1, 2, 0), ref, atol=1e-6)
    assert np.array_equal(denormalise(x)[0], image)


def test_resize_is_bilinear_antialiased(image):
    x = preprocess_images([image], size=64)
    ref = np.asarray(Image.fromarray(image).resize((64, 64), Image.Resampling.BILINEAR), np.float32) / 255.0
    np.testing.assert_allclose(x[0].transpose(1, 2, 0), (ref - 0.5) / 0.5, atol=1e-6)


def test_one_implementation_for_every_source(image, tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(_png(image))
    sources = [image, Image.fromarray(image), _png(image), path, str(path), image.astype(np.float32) / 255.0]
    outs = [preprocess_images([s]) for s in sources]
    for o in outs[1:]:
        assert np.array_equal(o, outs[0])
    assert np.array_equal(preprocess_images(image[None]), outs[0])  # a [B, H, W, 3] batch


def test_grey_and_rgba_become_rgb(image):
    grey = load_image(image[:, :, 0])
    assert grey.mode == "RGB" and grey.size == (128, 128)
    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    assert np.array_equal(np.asarray(load_image(rgba)), image)
    clear = rgba.copy()
    clear[..., 3] = 0
    assert (np.asarray(load_image(clear)) == 255).all()  # transparent -> white


def test_bad_inputs_are_typed(tmp_path, image):
    cases = [
        (b"not an image at all", "EF222"),
        (_png(image)[:200], "EF223"),
        (tmp_path / "missing.png", "EF220"),
        (np.zeros((4, 4, 7), np.uint8), "EF225"),
        (np.zeros((4, 4, 3), np.int32), "EF225"),
        (np.full((4, 4, 3), np.nan, np.float32), "EF225"),
        (12345, "EF221"),
    ]
    for src, code in cases:
        with pytest.raises(DataError) as e:
            load_image(src)
        assert e.value.code == code, (src if not isinstance(src, bytes) else src[:10], e.value)


def test_pixel_limit_guards_decompression_bombs(image):
    big = _png(np.zeros((300, 300, 3), np.uint8))
    with pytest.raises(DataError) as e:
        load_image(big, max_pixels=300 * 299)
    assert e.value.code == "EF224"
    assert load_image(big, max_pixels=None).size == (300, 300)
    with pytest.raises(DataError):
        preprocess_images([image], max_pixels=100)


def test_config_fingerprint_stable_and_sensitive():
    a = PreprocessConfig()
    assert a.fingerprint() == PreprocessConfig().fingerprint()
    assert a.fingerprint() == PreprocessConfig.from_dict(a.to_dict()).fingerprint()
    others = {PreprocessConfig(image_size=32), PreprocessConfig(max_text_length=16),
              PreprocessConfig(mean=(0.4, 0.5, 0.5)), PreprocessConfig(resample="bicubic")}
    assert len({o.fingerprint() for o in others} | {a.fingerprint()}) == 5
    # same value in a fresh interpreter: usable as an on-disk cache key
    out = subprocess.run(
        [sys.executable, "-c", "from edgefuse.data.preprocess import PreprocessConfig; print(PreprocessConfig().fingerprint())"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == a.fingerprint()
    with pytest.raises(DataError):
        PreprocessConfig(image_size=0)
    with pytest.raises(DataError):
        PreprocessConfig(std=(0.5, 0.0, 0.5))


def test_preprocessor_feed(image):
    pre = Preprocessor()
    feed = pre([image, image], ["what colour is the vase?", "is there a lamp?"])
    assert set(feed) == {"pixel_values", "input_ids", "attention_mask"}
    assert np.array_equal(feed["pixel_values"], preprocess_images([image, image]))
    ids, mask = pre.tokenizer.encode_batch(["what colour is the vase?", "is there a lamp?"], max_length=32)
    assert np.array_equal(feed["input_ids"], ids) and np.array_equal(feed["attention_mask"], mask)
    assert pre([image], ["x"], pad_to=32)["input_ids"].shape == (1, 32)
    with pytest.raises(DataError):
        pre([image], ["a", "b"])


def test_exif_rotation_applied(image):
    im = Image.fromarray(image[:, :64])  # 64 wide, 128 tall
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes())
    assert load_image(buf.getvalue()).size == (128, 64)


def test_sixteen_bit_png_scaled(tmp_path):
    a = np.full((8, 8), 65535, np.uint16)
    a[0, 0] = 0
    path = tmp_path / "deep.png"
    Image.fromarray(a).save(path)
    got = np.asarray(load_image(path))
    assert got.shape == (8, 8, 3) and got[1, 1, 0] == 255 and got[0, 0, 0] == 0
