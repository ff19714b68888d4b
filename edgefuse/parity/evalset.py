"""The evaluation set, flattened per task: museum test split or a user's folder (images/ + annotations.jsonl).

Every task indexes into one list of images, so one preprocessing pass serves all of them, and
a set with nothing the model's tasks can use is refused with what was found instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefuse.errors import ValidationError
from edgefuse.parity.scoring import EvalLabels

log = logging.getLogger(__name__)

RETRIEVAL_GALLERY = 20  # images (and their first caption) in the all-pairs retrieval gallery (n^2 model rows)
ITM_PER_IMAGE = 2  # positives and negatives taken per image
MUSEUM = "museum"


@dataclass
class EvalSet:
    """The evaluation items, flattened per task; every task indexes into `items` (the images)."""

    source: str
    items: list[Any]  # edgefuse.data.museum.MuseumItem
    vqa: list[tuple[int, str, int]] = field(default_factory=list)  # image, question, answer index (-1 = not in vocabulary)
    itm: list[tuple[int, str, int]] = field(default_factory=list)  # image, caption, 1 = match
    retrieval: list[tuple[int, str]] = field(default_factory=list)  # image, its caption (gallery; diagonal = match)
    grounding: list[tuple[int, str, tuple[float, float, float, float]]] = field(default_factory=list)
    captions: list[tuple[int, list[str]]] = field(default_factory=list)  # image, labelled captions
    vqa_kinds: list[str] = field(default_factory=list)  # question kind per VQA item ("colour", "count", ...)
    vqa_out_of_vocabulary: int = 0

    def counts(self) -> dict[str, int]:
        c = {"questions": len(self.vqa), "caption pairs": len(self.itm), "retrieval gallery": len(self.retrieval),
             "phrases": len(self.grounding), "captioned images": len(self.captions)}
        return {k: v for k, v in c.items() if v}

    def labels(self) -> EvalLabels:
        return EvalLabels(
            vqa_answer=np.array([a for _, _, a in self.vqa], dtype=np.int64) if self.vqa else None,
            vqa_kind=list(self.vqa_kinds) if self.vqa else None,
            itm_label=np.array([y for _, _, y in self.itm], dtype=np.int64) if self.itm else None,
            boxes=np.array([b for _, _, b in self.grounding], dtype=np.float64).reshape(-1, 4) if self.grounding else None,
            caption_refs=[r for _, r in self.captions] if self.captions else None,
        )


def load_items(source: str | Path, n: int | None) -> tuple[str, list[Any]]:
    """Museum test split ("museum") or a dataset folder (images/ + annotations.jsonl)."""
    from edgefuse.errors import DataError

    if n is not None and n < 1:
        raise ValidationError(f"--n must be >= 1, got {n}", "pass the number of images to evaluate", code="EF907")
    if str(source) == MUSEUM:
        from edgefuse.data.museum import generate

        items = generate("test", n=n)
        return f"museum test split (first {len(items)})", items
    folder = Path(source)
    if not folder.exists():
        raise ValidationError(f"evaluation set {folder} not found", f"pass '{MUSEUM}' or a folder with images/ and annotations.jsonl",
                              code="EF907")
    try:
        from edgefuse.data.dataset import read_dataset

        items = read_dataset(folder)
    except DataError as e:
        raise ValidationError(f"evaluation set {folder}: {e.message}", e.hint, code="EF907") from e
    if n is not None:
        items = items[:n]
    return f"{folder} ({len(items)} images)", items


def build_eval_set(source: str | Path, n: int | None, tasks: Sequence[str], answers: Sequence[str],
                   retrieval_gallery: int = RETRIEVAL_GALLERY) -> EvalSet:
    """Flatten the items into per-task lists; refuse a set with nothing for the model's tasks."""
    name, items = load_items(source, n)
    ev = EvalSet(name, items)
    index = {a: i for i, a in enumerate(answers)}
    for i, it in enumerate(items):
        if "vqa" in tasks:
            for qa in it.questions:
                a = index.get(str(qa.answer).strip().lower(), index.get(str(qa.answer), -1))
                ev.vqa_out_of_vocabulary += a < 0
                ev.vqa.append((i, qa.question, a))
                ev.vqa_kinds.append(str(qa.kind or "other"))
        if "itm" in tasks:
            ev.itm += [(i, c, 1) for c in it.captions[:ITM_PER_IMAGE]]
            ev.itm += [(i, c, 0) for c in it.negative_captions[:ITM_PER_IMAGE]]
            if it.captions and len(ev.retrieval) < retrieval_gallery:
                ev.retrieval.append((i, it.captions[0]))
        if "grounding" in tasks:
            ev.grounding += [(i, r.phrase, tuple(float(v) for v in r.box)) for r in it.refs]
        if "captioning" in tasks and it.captions:
            ev.captions.append((i, list(it.captions)))
    if len(ev.retrieval) < 2:
        ev.retrieval = []
    if ev.itm and len({y for *_, y in ev.itm}) < 2:
        log.info("ITM items have one class only: AUC will be undefined")
    if not (ev.vqa or ev.itm or ev.grounding or ev.captions):
        found = {"images": len(items), "questions": sum(len(i.questions) for i in items),
                 "captions": sum(len(i.captions) for i in items), "refs": sum(len(i.refs) for i in items)}
        raise ValidationError(
            f"evaluation set {name} has no usable items for tasks {', '.join(tasks)}: found "
            + ", ".join(f"{v} {k}" for k, v in found.items()),
            "add questions (vqa), captions with negative_captions (itm), refs (grounding) or captions (captioning)",
            code="EF907")
    if ev.vqa and ev.vqa_out_of_vocabulary == len(ev.vqa) and not (ev.itm or ev.grounding):
        raise ValidationError(f"evaluation set {name}: none of its {len(ev.vqa)} answers is in the model's answer vocabulary",
                              f"answers the model knows: {', '.join(list(answers)[:12])}...", code="EF907")
    return ev


