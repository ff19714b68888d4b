"""Image and text preprocessing: the one implementation that training, calibration, validation
and the kiosk all call, so a model never sees pixels prepared two different ways.

Images: any of bytes / path / PIL.Image / ndarray -> RGB -> bilinear resize to S x S ->
float32 0..1 -> (x - mean) / std -> [B, 3, S, S]. Text: the tokenizer's `encode_batch`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgefuse.errors import DataError

if TYPE_CHECKING:
    from edgefuse.data.tokenizer import Tokenizer

PREPROCESS_VERSION = 1  # bump when the pixel pipeline changes: invalidates every cache key
DEFAULT_MAX_PIXELS = 40_000_000  # decompression-bomb guard: ~6300 x 6300

ImageSource = Union[bytes, bytearray, memoryview, str, os.PathLike, Image.Image, np.ndarray]


@dataclass(frozen=True)
class PreprocessConfig:
    """How inputs become model tensors. `fingerprint()` keys caches of preprocessed data."""

    image_size: int = 64
    max_text_length: int = 32
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resample: str = "bilinear"

    def __post_init__(self) -> None:
        if self.image_size < 1 or self.max_text_length < 3:
            raise DataError(
                f"bad preprocessing config: image_size={self.image_size}, max_text_length={self.max_text_length}",
                "image_size >= 1 and max_text_length >= 3 ([CLS] word [SEP])",
                code="EF230",
            )
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise DataError("mean and std need 3 values, std > 0", "e.g. mean=(0.5,)*3, std=(0.5,)*3", code="EF230")
        if self.resample not in _RESAMPLE:
            raise DataError(f"unknown resample '{self.resample}'", f"valid: {', '.join(_RESAMPLE)}", code="EF230")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        known = {k: d[k] for k in ("image_size", "max_text_length", "resample") if k in d}
        for k in ("mean", "std"):
            if k in d:
                known[k] = tuple(float(v) for v in d[k])
        return cls(**known)

    def fingerprint(self) -> str:
        """Stable hash of everything that changes the tensors (config + pipeline version)."""
        payload = json.dumps({"v": PREPROCESS_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC, "nearest": Image.Resampling.NEAREST}


def load_image(src: ImageSource, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str | None = None) -> Image.Image:
    """Any supported image source -> RGB PIL image, fully decoded.

    Raises DataError for a missing file, bytes that are not an image, a truncated file, an
    image over `max_pixels` (None = only Pillow's own bomb guard, ~89 M pixels) and arrays of a shape that is not an image.
    `name` labels the source in error messages (e.g. 'annotations.jsonl line 3').
    """
    label = name or (str(src) if isinstance(src, (str, os.PathLike)) else type(src).__name__)
    if isinstance(src, Image.Image):
        _check_pixels(src.size, max_pixels, label)
        return src if src.mode == "RGB" else _to_rgb(src)
    if isinstance(src, np.ndarray):
        return _from_array(src, label, max_pixels)
    if isinstance(src, (bytes, bytearray, memoryview)):
        fp: Any = io.BytesIO(bytes(src))
    elif isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise DataError(f"image not found: {path}", "check the path", code="EF220")
        fp = path
    else:
        raise DataError(
            f"cannot read an image from {type(src).__name__}",
            "pass bytes, a file path, a PIL.Image or a uint8 array [H, W, 3]",
            code="EF221",
        )
    # The size check runs on the header, before any pixel is decoded. No warnings.catch_warnings
    # here: it swaps global state and the kiosk decodes from several threads.
    try:
        with Image.open(fp) as im:
            _check_pixels(im.size, max_pixels, label)
            im.load()
            # phone photos store "rotate me" in EXIF: show the model what the visitor saw
            upright = ImageOps.exif_transpose(im)
            return _to_rgb(upright if upright is not None else im)
    except DataError:
        raise
    except UnidentifiedImageError as e:
        raise DataError(f"{label} is not an image", "use PNG, JPEG, BMP or WebP", code="EF222") from e
    except Image.DecompressionBombError as e:
        raise DataError(f"{label} is too large to decode safely", "resize it below the pixel limit", code="EF224") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{label} is truncated or corrupt: {e}", "re-export or re-copy the image", code="EF223") from e


def _check_pixels(size: tuple[int, int], max_pixels: int | None, label: str) -> None:
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise DataError(
            f"{label} has {w}x{h} = {w * h} pixels, over the limit of {max_pixels}",
            "resize the image, or raise max_pixels if you trust the source",
            code="EF224",
        )
    if w < 1 or h < 1:
        raise DataError(f"{label} is empty ({w}x{h})", "pass a real image", code="EF222")


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB; transparent pixels composited on white (as a browser shows them); 16-bit scaled."""
    if im.mode.startswith("I;16") or (im.mode == "I" and im.getextrema()[1] > 255):
        a = np.asarray(im, dtype=np.float32) / 257.0  # 0..65535 -> 0..255
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")


def _from_array(a: np.ndarray, label: str, max_pixels: int | None) -> Image.Image:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise DataError(
            f"{label} array has shape {a.shape}, not an image",
            "pass [H, W, 3] (RGB), [H, W, 4] (RGBA) or [H, W] (grey)",
            code="EF225",
        )
    _check_pixels((a.shape[1], a.shape[0]), max_pixels, label)
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):
            if not np.isfinite(a).all():
                raise DataError(f"{label} array holds NaN or inf", "pass finite pixel values", code="EF225")
            a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)  # floats are taken as 0..1
        else:
            raise DataError(f"{label} array has dtype {a.dtype}", "pass uint8 0..255 or float 0..1", code="EF225")
    im = Image.fromarray(np.ascontiguousarray(a))
    return im if im.mode == "RGB" else _to_rgb(im)


def resize_image(image: Image.Image, size: int, resample: str = "bilinear") -> np.ndarray:
    """RGB PIL -> uint8 [size, size, 3] (antialiased when shrinking, like torchvision's default)."""
    if image.size != (size, size):
        image = image.resize((size, size), _RESAMPLE[resample])
    return np.asarray(image, dtype=np.uint8)


def preprocess_images(
    images: Sequence[ImageSource] | np.ndarray,
    size: int | None = None,
    config: PreprocessConfig | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Images -> float32 [B, 3, S, S]: RGB 0..1, bilinear resize to S, then (x - mean) / std.

    Non-square photos are squashed, not cropped: museum answers depend on what is at the left
    and right edges ("what is on the left?"), which a centre crop would cut off.

    `images` is a list of anything `load_image` takes, or a uint8 array [B, H, W, 3].
    `size` overrides `config.image_size`.
    """
    cfg = config or PreprocessConfig()
    s = cfg.image_size if size is None else int(size)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    if len(images) == 0:
        return np.zeros((0, 3, s, s), np.float32)
    batch = np.stack([resize_image(load_image(im, max_pixels), s, cfg.resample) for im in images])
    return normalise(batch, cfg)


def normalise(batch: np.ndarray, config: PreprocessConfig | None = None) -> np.ndarray:
    """uint8 [B, S, S, 3] -> float32 [B, 3, S, S] normalised (the last step of preprocess_images)."""
    cfg = config or PreprocessConfig()
    x = batch.astype(np.float32) / np.float32(255.0)
    mean = np.asarray(cfg.mean, np.float32)
    std = np.asarray(cfg.std, np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def denormalise(pixel_values: np.ndarray, config: PreprocessConfig | None = None) -> np.ndarray:
    """float32 [B, 3, S, S] -> uint8 [B, S, S, 3] (for showing what the model saw)."""
    cfg = config or PreprocessConfig()
    x = pixel_values.transpose(0, 2, 3, 1) * np.asarray(cfg.std, np.float32) + np.asarray(cfg.mean, np.float32)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


class Preprocessor:
    """Images + texts -> the model feed {pixel_values, input_ids, attention_mask}."""

    def __init__(self, config: PreprocessConfig | None = None, tokenizer: Tokenizer | None = None) -> None:
        from edgefuse.data.tokenizer import default_tokenizer

        self.config = config or PreprocessConfig()
        self.tokenizer = tokenizer or default_tokenizer()

    def fingerprint(self) -> str:
        """Config + tokenizer: changes when either would change the feed."""
        h = hashlib.sha256((self.config.fingerprint() + self.tokenizer.fingerprint()).encode())
        return h.hexdigest()[:16]

    def __call__(
        self, images: Sequence[ImageSource] | np.ndarray, texts: Sequence[str], pad_to: int | None = None
    ) -> dict[str, np.ndarray]:
        n_images = len(images)
        if n_images != len(texts):
            raise DataError(
                f"{n_images} images but {len(texts)} texts", "pass one text per image", code="EF231"
            )
        ids, mask = self.tokenizer.encode_batch(list(texts), max_length=self.config.max_text_length, pad_to=pad_to)
        return {
            "pixel_values": preprocess_images(images, config=self.config),
            "input_ids": ids,
            "attention_mask": mask,
        }
