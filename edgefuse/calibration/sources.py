"""Where calibration samples come from: the museum default or a user folder.

A source yields image-text pairs (questions and captions paired with their image by the
annotation line). Sampling is deterministic: pairs are sorted by a stable key, then a seeded
generator picks `n` of them, so the same data and seed always give the same calibration set.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefuse.errors import CalibrationError, DataError

log = logging.getLogger(__name__)

MUSEUM = "museum"


@dataclass(frozen=True)
class CalibrationPair:
    """One image with one text. `image` is anything `edgefuse.data.preprocess.load_image` takes."""

    key: str  # "<image_id>/q<i>" or "<image_id>/c<i>": sort key and stable identity
    image: Any
    text: str
    kind: str  # "question" | "caption"
    answer: str | None = None
    where: str = ""  # for error messages: file and line


def _pairs_of(image_id: str, image: Any, questions, captions, where: str = "") -> list[CalibrationPair]:
    out = [CalibrationPair(f"{image_id}/q{i:03d}", image, q.question, "question", q.answer, where)
           for i, q in enumerate(questions)]
    out += [CalibrationPair(f"{image_id}/c{i:03d}", image, c, "caption", None, where) for i, c in enumerate(captions)]
    return out


def museum_pairs(n: int, split: str = "train") -> list[CalibrationPair]:
    """Pairs from the first images of a museum split: enough images for `n` pairs to be drawn
    from several texts per image without using only the first few scenes."""
    from edgefuse.data import museum

    images = max(8, math.ceil(n / 3))
    items = museum.generate(split, n=images)
    pairs: list[CalibrationPair] = []
    for it in items:
        pairs += _pairs_of(it.image_id, it.image, it.questions, it.captions, f"museum {split} {it.image_id}")
    return pairs


def folder_pairs(folder: str | os.PathLike[str]) -> list[CalibrationPair]:
    """Pairs from a dataset folder (images/ + annotations.jsonl); images are opened later,
    only for the pairs sampled."""
    from edgefuse.data.dataset import ANNOTATIONS, iter_records

    root = Path(folder)
    try:
        records = list(iter_records(root))
    except DataError as e:
        raise CalibrationError(e.message, e.hint or "check the calibration folder", code="EF501") from e
    if not records:
        raise CalibrationError(f"calibration folder {root} has no annotated images ({ANNOTATIONS} is empty)",
                               "add one JSON line per image with questions or captions", code="EF502")
    pairs: list[CalibrationPair] = []
    for r in records:
        pairs += _pairs_of(r.image_id, r.image_path, r.questions, r.captions, f"{r.image_path} ({ANNOTATIONS} line {r.line})")
    return pairs


def source_pairs(source: str | os.PathLike[str], n: int) -> list[CalibrationPair]:
    """All candidate pairs of a source: 'museum' (the default) or a folder path."""
    if str(source) == MUSEUM:
        return museum_pairs(n)
    p = Path(source)
    if not p.exists():
        raise CalibrationError(f"calibration source '{source}' not found", "pass 'museum' or a folder with images/ and annotations.jsonl",
                               code="EF501")
    if not p.is_dir():
        raise CalibrationError(f"calibration source {p} is not a folder", "pass a folder with images/ and annotations.jsonl", code="EF501")
    if not os.access(p, os.R_OK | os.X_OK):
        raise CalibrationError(f"calibration folder {p} is not readable", "check its permissions", code="EF501")
    return folder_pairs(p)


def sample_pairs(pairs: list[CalibrationPair], n: int, seed: int) -> list[CalibrationPair]:
    """`n` pairs chosen by a seeded generator from the pairs sorted by key; fewer is a warning."""
    if n < 1:
        raise CalibrationError(f"num_samples must be >= 1, got {n}", "use a few hundred pairs", code="EF503")
    if not pairs:
        raise CalibrationError("no calibration pairs", "the source holds no questions or captions", code="EF502")
    ordered = sorted(pairs, key=lambda p: p.key)
    if len(ordered) < n:
        log.warning("only %d calibration pairs available, %d asked for: ranges may be less reliable", len(ordered), n)
        return ordered
    idx = np.sort(np.random.default_rng(seed).choice(len(ordered), size=n, replace=False))
    return [ordered[i] for i in idx]


def pairs_hash(pairs: list[CalibrationPair]) -> str:
    """sha256 over the content of the pairs used: image pixels or file bytes, and text."""
    h = hashlib.sha256()
    cache: dict[int | str, bytes] = {}
    for p in pairs:
        h.update(p.key.encode() + b"\0" + p.text.encode() + b"\0")
        k: int | str = str(p.image) if isinstance(p.image, (str, os.PathLike)) else id(p.image)
        if k not in cache:
            cache[k] = _image_digest(p.image)
        h.update(cache[k])
    return h.hexdigest()


def _image_digest(image: Any) -> bytes:
    if isinstance(image, np.ndarray):
        return hashlib.sha256(str(image.shape).encode() + str(image.dtype).encode() + np.ascontiguousarray(image).tobytes()).digest()
    if isinstance(image, (str, os.PathLike)):
        try:
            return hashlib.sha256(Path(image).read_bytes()).digest()
        except OSError as e:
            raise CalibrationError(f"cannot read calibration image {image}: {e.strerror}", "check the file", code="EF504") from e
    if isinstance(image, (bytes, bytearray)):
        return hashlib.sha256(bytes(image)).digest()
    return hashlib.sha256(repr(image).encode()).digest()
