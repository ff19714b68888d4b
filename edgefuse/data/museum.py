"""Deterministic synthetic museum scenes: exhibits on a wall, with questions, captions and boxes.

Every image is drawn from its own seed (split seed, index), so `generate(split, n)` returns the
same items, byte for byte, on every call (checked across numpy 2.4-2.5 and Pillow 12-13), and
the first k items do not depend on n. The scene is sampled first (a `Layout`), the text is
derived from the layout and the boxes from the drawn pixels, so answers, captions and boxes
always agree with the picture.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from edgefuse.errors import DataError, suggest

log = logging.getLogger(__name__)

RENDER_SIZE = 128  # pixels drawn; models see preprocess_images(..., size=64)
MODEL_IMAGE_SIZE = 64

CATEGORIES: tuple[str, ...] = ("vase", "bowl", "statue", "painting", "lamp", "clock")
HANGING = frozenset({"painting", "clock"})  # drawn on the wall; the others stand on the floor
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 25, 35),
    "green": (30, 170, 50),
    "blue": (30, 70, 225),
    "yellow": (245, 225, 40),
    "purple": (140, 45, 190),
    "orange": (250, 125, 0),
    "white": (248, 248, 248),
    "black": (15, 15, 15),
}
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "middle", "right")
POSITION_PHRASES = {"left": "on the left", "middle": "in the middle", "right": "on the right"}
COUNTS: tuple[str, ...] = ("0", "1", "2", "3")
YES_NO: tuple[str, ...] = ("yes", "no")
QUESTION_KINDS: tuple[str, ...] = ("colour", "count", "presence", "position", "category")

# Muted mid-tone walls and darker floors: far from every exhibit colour, white and black included.
WALLS: tuple[tuple[int, int, int], ...] = (
    (150, 140, 125),
    (120, 128, 140),
    (135, 145, 130),
    (145, 130, 140),
    (130, 120, 110),
    (112, 122, 128),
)
FLOORS: tuple[tuple[int, int, int], ...] = (
    (100, 82, 66),
    (88, 88, 94),
    (108, 98, 82),
    (80, 86, 80),
)

SPLITS: dict[str, tuple[int, int]] = {  # name -> (default size, seed)
    "train": (8000, 20261),
    "val": (500, 20262),
    "test": (500, 20263),
}

_SLOT_CENTRES = tuple(RENDER_SIZE * (2 * i + 1) / 6 for i in range(3))
_SIZE_RANGE = {"small": (24, 28), "large": (38, 42)}  # object height scale in render pixels
_FILL, _DETAIL = 255, 128  # mask values: object body, dark detail (clock hands, frame line)


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    kind: str  # one of QUESTION_KINDS for museum data; free text for user data


@dataclass(frozen=True)
class Ref:
    phrase: str
    box: tuple[float, float, float, float]  # x, y, w, h in [0, 1], top-left origin


@dataclass(frozen=True)
class Exhibit:
    category: str
    colour: str
    size: str
    position: str
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


@dataclass
class MuseumItem:
    """One image with everything the tasks need. `captions[0]` is the canonical caption."""

    image_id: str
    image: np.ndarray  # uint8 [H, W, 3]
    questions: list[QA] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    negative_captions: list[str] = field(default_factory=list)
    refs: list[Ref] = field(default_factory=list)
    exhibits: list[Exhibit] = field(default_factory=list)  # ground truth scene (museum data only)


@dataclass(frozen=True)
class _Placed:
    category: str
    colour: str
    size: str
    position: str
    scale: int  # height scale in pixels
    cx: float
    y: float  # floor contact for standing objects, centre for hanging ones


@dataclass(frozen=True)
class Layout:
    """The sampled scene, before drawing: exhibits left to right plus background and lighting."""

    exhibits: tuple[_Placed, ...]
    wall: tuple[int, int, int]
    floor: tuple[int, int, int]
    floor_y: int
    wall_gradient: float
    side_gradient: float
    contrast: float
    brightness: float
    noise: float


def answer_vocabulary() -> list[str]:
    """Every answer the museum questions can have, in a fixed order (= VQA logit index)."""
    return [*COLOURS, *COUNTS, *YES_NO, *POSITIONS, *CATEGORIES]


def split_seed(split: str) -> int:
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'", suggest(split, SPLITS), code="EF210")
    return SPLITS[split][1]


def generate(split: str, n: int | None = None, seed: int | None = None) -> list[MuseumItem]:
    """The museum split `split` ("train" 8000, "val" 500, "test" 500 by default).

    `seed` replaces the split's fixed seed (for extra data); the ids then carry it.
    """
    return list(iter_items(split, n, seed))


def iter_items(split: str, n: int | None = None, seed: int | None = None) -> Iterator[MuseumItem]:
    """Like generate, one item at a time (writing a big split without holding it in memory)."""
    base = stream_seed(split, seed)
    n = SPLITS[split][0] if n is None else n
    if n < 0:
        raise DataError(f"n must be >= 0, got {n}", "pass a positive number of images", code="EF211")
    prefix = split if seed is None else f"{split}-s{seed}"
    for i in range(n):
        yield make_item(base, i, f"{prefix}-{i:05d}")


def stream_seed(split: str, seed: int | None = None) -> tuple[int, ...]:
    """Seed words of a split's image stream; a custom seed differs per split too."""
    fixed = split_seed(split)
    if seed is None:
        return (fixed,)
    if not isinstance(seed, int) or seed < 0:
        raise DataError(f"seed must be an integer >= 0, got {seed!r}", "e.g. --seed 7", code="EF212")
    return (seed, list(SPLITS).index(split) + 1)


def iter_layouts(
    split: str, n: int | None = None, seed: int | None = None
) -> Iterator[tuple[Layout, np.random.Generator]]:
    """Layouts only (no drawing): the text side of a split, fast (used to build the tokenizer)."""
    base = stream_seed(split, seed)
    n = SPLITS[split][0] if n is None else n
    for i in range(n):
        rng = _rng(base, i)
        yield sample_layout(rng), rng


def make_item(seed: int | tuple[int, ...], index: int, image_id: str) -> MuseumItem:
    """Item `index` of the stream `seed` (see stream_seed): independent of every other index."""
    rng = _rng(seed, index)
    layout = sample_layout(rng)
    bare = [Exhibit(p.category, p.colour, p.size, p.position) for p in layout.exhibits]
    questions = make_questions(bare, rng)  # corpus() replays exactly these draws
    negatives = make_negative_captions(bare, rng)
    image, masks = render(layout, _rng(seed, index, "pixels"))
    exhibits = [_replace(e, box=mask_box(m)) for e, m in zip(bare, masks)]
    return MuseumItem(
        image_id=image_id,
        image=image,
        questions=questions,
        captions=make_captions(exhibits),
        negative_captions=negatives,
        refs=make_refs(exhibits),
        exhibits=exhibits,
    )


def _rng(seed: int | tuple[int, ...], index: int, stream: str = "scene") -> np.random.Generator:
    """One generator per (seed, index, stream): scene + text draws apart from pixel noise."""
    words = [seed] if isinstance(seed, int) else list(seed)
    return np.random.default_rng(np.random.SeedSequence([*words, index, _STREAMS[stream]]))


_STREAMS = {"scene": 0, "pixels": 1}


# ---------------------------------------------------------------- sampling


def sample_layout(rng: np.random.Generator) -> Layout:
    """1-3 exhibits in distinct slots; categories repeat often enough for count answers 2 and 3."""
    count = int(rng.integers(1, 4))
    slots = sorted(int(s) for s in rng.choice(3, size=count, replace=False))
    cats: list[str] = []
    repeat = rng.random() < 0.5  # half the scenes repeat a category: count answers 2 and 3
    for _ in range(count):
        if cats and repeat and rng.random() < 0.85:
            cats.append(cats[int(rng.integers(len(cats)))])
        else:
            cats.append(CATEGORIES[int(rng.integers(len(CATEGORIES)))])
    floor_y = int(rng.integers(86, 101))
    placed = []
    for slot, cat in zip(slots, cats):
        colour = tuple(COLOURS)[int(rng.integers(len(COLOURS)))]
        size = SIZES[int(rng.integers(2))]
        lo, hi = _SIZE_RANGE[size]
        scale = int(rng.integers(lo, hi + 1))
        cx = _SLOT_CENTRES[slot] + float(rng.uniform(-2.0, 2.0))
        if cat in HANGING:
            y = float(rng.uniform(30, 46))
        else:
            y = float(floor_y + rng.integers(2, 12))
        placed.append(_Placed(cat, colour, size, POSITIONS[slot], scale, cx, y))
    return Layout(
        exhibits=tuple(placed),
        wall=WALLS[int(rng.integers(len(WALLS)))],
        floor=FLOORS[int(rng.integers(len(FLOORS)))],
        floor_y=floor_y,
        wall_gradient=float(rng.uniform(-18, 18)),
        side_gradient=float(rng.uniform(-12, 12)),
        contrast=float(rng.uniform(0.85, 1.15)),
        brightness=float(rng.uniform(-15, 15)),
        noise=float(rng.uniform(1.5, 5.0)),
    )


# ---------------------------------------------------------------- drawing


_YS = (np.arange(RENDER_SIZE, dtype=np.float32) / RENDER_SIZE)[:, None, None]  # [S, 1, 1]
_XS = (np.arange(RENDER_SIZE, dtype=np.float32) / RENDER_SIZE)[None, :, None]  # [1, S, 1]


def render(layout: Layout, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """Draw the layout: uint8 [S, S, 3] image plus one bool mask per exhibit (its drawn pixels)."""
    s = RENDER_SIZE
    rows = np.empty((s, 1, 3), np.float32)  # wall above the floor line, floor below
    rows[: layout.floor_y] = layout.wall
    rows[layout.floor_y :] = layout.floor
    rows += layout.wall_gradient * (0.5 - _YS)
    img = rows + layout.side_gradient * (_XS - 0.5)  # [S, S, 3]
    masks = []
    for p in layout.exhibits:
        mask_img = Image.new("L", (s, s), 0)
        _DRAW[p.category](ImageDraw.Draw(mask_img), p.cx, p.y, float(p.scale))
        m = np.asarray(mask_img)
        body = m == _FILL
        colour = np.asarray(COLOURS[p.colour], np.float32)
        img[body] = colour
        if p.category in _HAS_DETAIL:
            img[m == _DETAIL] = _detail_colour(colour)
        masks.append(m > 0)
    # lighting (contrast about mid-grey, brightness shift) and sensor noise, then round to uint8
    # noise: sum of two uniform bytes (triangular, std 104.5) scaled to std `layout.noise`;
    # 8x faster than standard_normal, which would be most of the drawing time
    u = rng.integers(0, 256, (2, s, s, 3), dtype=np.uint8)
    noise = u[0].astype(np.float32)
    noise += u[1]
    noise -= np.float32(255.0)
    noise *= np.float32(layout.noise / 104.5)
    img *= np.float32(layout.contrast)
    img += np.float32(128.0 * (1.0 - layout.contrast) + layout.brightness + 0.5)
    img += noise
    np.clip(img, 0.0, 255.0, out=img)
    return img.astype(np.uint8), masks


_HAS_DETAIL = frozenset({"painting", "clock"})


def _detail_colour(colour: np.ndarray) -> np.ndarray:
    """Dark detail (clock hands, canvas line); light grey on black exhibits so it shows."""
    return colour * 0.45 if colour.sum() > 120 else np.full(3, 90.0, np.float32)


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Tight normalised (x, y, w, h) of a bool mask, top-left origin."""
    h, w = mask.shape
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]) + 1, int(rows[0]), int(rows[-1]) + 1
    return (x0 / w, y0 / h, (x1 - x0) / w, (y1 - y0) / h)


def _draw_vase(d: ImageDraw.ImageDraw, cx: float, base: float, s: float) -> None:
    d.ellipse((cx - 0.3 * s, base - 0.68 * s, cx + 0.3 * s, base - 0.04 * s), fill=_FILL)
    d.rectangle((cx - 0.09 * s, base - 0.88 * s, cx + 0.09 * s, base - 0.6 * s), fill=_FILL)
    d.rectangle((cx - 0.18 * s, base - s, cx + 0.18 * s, base - 0.88 * s), fill=_FILL)
    d.rectangle((cx - 0.14 * s, base - 0.08 * s, cx + 0.14 * s, base), fill=_FILL)


def _draw_bowl(d: ImageDraw.ImageDraw, cx: float, base: float, s: float) -> None:
    rim = base - 0.48 * s
    d.chord((cx - 0.45 * s, rim - 0.38 * s, cx + 0.45 * s, rim + 0.38 * s), 0, 180, fill=_FILL)
    d.rectangle((cx - 0.15 * s, base - 0.12 * s, cx + 0.15 * s, base), fill=_FILL)


def _draw_statue(d: ImageDraw.ImageDraw, cx: float, base: float, s: float) -> None:
    d.rectangle((cx - 0.3 * s, base - 0.18 * s, cx + 0.3 * s, base), fill=_FILL)
    d.polygon(
        [(cx - 0.2 * s, base - 0.18 * s), (cx + 0.2 * s, base - 0.18 * s),
         (cx + 0.12 * s, base - 0.74 * s), (cx - 0.12 * s, base - 0.74 * s)],
        fill=_FILL,
    )
    d.rectangle((cx - 0.27 * s, base - 0.7 * s, cx + 0.27 * s, base - 0.6 * s), fill=_FILL)  # arms
    d.ellipse((cx - 0.13 * s, base - s, cx + 0.13 * s, base - 0.74 * s), fill=_FILL)


def _draw_lamp(d: ImageDraw.ImageDraw, cx: float, base: float, s: float) -> None:
    w = max(0.05 * s, 1.2)
    d.rectangle((cx - 0.22 * s, base - 0.07 * s, cx + 0.22 * s, base), fill=_FILL)
    d.rectangle((cx - w, base - 0.7 * s, cx + w, base - 0.07 * s), fill=_FILL)
    d.polygon(
        [(cx - 0.15 * s, base - s), (cx + 0.15 * s, base - s),
         (cx + 0.36 * s, base - 0.64 * s), (cx - 0.36 * s, base - 0.64 * s)],
        fill=_FILL,
    )


def _draw_painting(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float) -> None:
    w, h = 0.45 * s, 0.34 * s
    d.rectangle((cx - w, cy - h, cx + w, cy + h), fill=_FILL)
    i = 0.14 * s
    d.rectangle((cx - w + i, cy - h + i, cx + w - i, cy + h - i), outline=_DETAIL, width=max(1, int(s / 20)))


def _draw_clock(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float) -> None:
    r = 0.42 * s
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_FILL)
    w = max(1, int(round(s / 14)))
    d.line((cx, cy, cx, cy - 0.3 * s), fill=_DETAIL, width=w)
    d.line((cx, cy, cx + 0.22 * s, cy + 0.05 * s), fill=_DETAIL, width=w)


_DRAW = {
    "vase": _draw_vase,
    "bowl": _draw_bowl,
    "statue": _draw_statue,
    "lamp": _draw_lamp,
    "painting": _draw_painting,
    "clock": _draw_clock,
}


# ---------------------------------------------------------------- text


def plural(category: str) -> str:
    return category + "s"


def make_questions(exhibits: list[Exhibit], rng: np.random.Generator) -> list[QA]:
    """Only questions with one right answer; yes/no and present/absent counts come in pairs."""
    qs: list[QA] = []
    by_cat: dict[str, list[Exhibit]] = {}
    for e in exhibits:
        by_cat.setdefault(e.category, []).append(e)
    colour_count: dict[str, int] = {}
    for e in exhibits:
        colour_count[e.colour] = colour_count.get(e.colour, 0) + 1
    absent = [c for c in CATEGORIES if c not in by_cat]
    other = absent[int(rng.integers(len(absent)))] if absent else None

    for cat, group in by_cat.items():
        if len(group) == 1:
            e = group[0]
            qs.append(QA(f"what colour is the {cat}?", e.colour, "colour"))
            qs.append(QA(f"where is the {cat}?", e.position, "position"))
        else:
            for e in group:
                qs.append(QA(f"what colour is the {cat} {POSITION_PHRASES[e.position]}?", e.colour, "colour"))
                if sum(1 for g in group if g.colour == e.colour) == 1:
                    qs.append(QA(f"where is the {e.colour} {cat}?", e.position, "position"))
        qs.append(QA(f"how many {plural(cat)} are there?", str(len(group)), "count"))
    present = list(by_cat)
    shown = present[int(rng.integers(len(present)))]
    qs.append(QA(f"is there a {shown}?", "yes", "presence"))
    if other is not None:
        qs.append(QA(f"is there a {other}?", "no", "presence"))
        qs.append(QA(f"how many {plural(other)} are there?", "0", "count"))
    for e in exhibits:
        qs.append(QA(f"what is {POSITION_PHRASES[e.position]}?", e.category, "category"))
        qs.append(QA(f"what colour is the object {POSITION_PHRASES[e.position]}?", e.colour, "colour"))
        if colour_count[e.colour] == 1:
            qs.append(QA(f"what is the {e.colour} object?", e.category, "category"))
    return qs


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def full_caption(exhibits: list[Exhibit]) -> str:
    """'a large red vase on the left and a small blue lamp on the right' (left to right)."""
    ordered = sorted(exhibits, key=lambda e: POSITIONS.index(e.position))
    return _join([f"a {e.size} {e.colour} {e.category} {POSITION_PHRASES[e.position]}" for e in ordered])


def short_caption(exhibits: list[Exhibit]) -> str:
    """'a red vase and a blue lamp' (left to right)."""
    ordered = sorted(exhibits, key=lambda e: POSITIONS.index(e.position))
    return _join([f"{_article(e.colour)} {e.colour} {e.category}" for e in ordered])


def make_captions(exhibits: list[Exhibit]) -> list[str]:
    return [full_caption(exhibits), short_caption(exhibits)]


def make_negative_captions(exhibits: list[Exhibit], rng: np.random.Generator) -> list[str]:
    """Hard negatives: the true caption with one colour, one category or one position changed."""
    truth = {full_caption(exhibits), short_caption(exhibits)}
    out: list[str] = []

    def swap_attr(attr: str, choices: tuple[str, ...]) -> list[Exhibit]:
        k = int(rng.integers(len(exhibits)))
        old = getattr(exhibits[k], attr)
        options = [c for c in choices if c != old]
        new = options[int(rng.integers(len(options)))]
        changed = list(exhibits)
        changed[k] = _replace(exhibits[k], **{attr: new})
        return changed

    by_colour = swap_attr("colour", tuple(COLOURS))
    out.append(full_caption(by_colour))
    out.append(full_caption(swap_attr("category", CATEGORIES)))
    moved = _move(exhibits, rng)
    if moved is not None:
        out.append(full_caption(moved))
    out.append(short_caption(swap_attr("colour", tuple(COLOURS))))
    return [c for i, c in enumerate(out) if c not in truth and c not in out[:i]]


def _replace(e: Exhibit, **kw: object) -> Exhibit:
    d = {"category": e.category, "colour": e.colour, "size": e.size, "position": e.position, "box": e.box}
    d.update(kw)
    return Exhibit(**d)


def _move(exhibits: list[Exhibit], rng: np.random.Generator) -> list[Exhibit] | None:
    """Swap two different exhibits' places, or move a lone one to a free place."""
    n = len(exhibits)
    pairs = [
        (i, j) for i in range(n) for j in range(i + 1, n)
        if (exhibits[i].category, exhibits[i].colour, exhibits[i].size)
        != (exhibits[j].category, exhibits[j].colour, exhibits[j].size)
    ]
    if pairs:
        i, j = pairs[int(rng.integers(len(pairs)))]
        changed = list(exhibits)
        changed[i] = _replace(exhibits[i], position=exhibits[j].position)
        changed[j] = _replace(exhibits[j], position=exhibits[i].position)
        return changed
    free = [p for p in POSITIONS if p not in {e.position for e in exhibits}]
    if not free:
        return None
    k = int(rng.integers(n))
    changed = list(exhibits)
    changed[k] = _replace(exhibits[k], position=free[int(rng.integers(len(free)))])
    return changed


def make_refs(exhibits: list[Exhibit]) -> list[Ref]:
    """Referring phrases with one referent: 'the red vase' (when unique) and 'the vase on the left'."""
    refs = []
    for e in exhibits:
        same = sum(1 for o in exhibits if (o.colour, o.category) == (e.colour, e.category))
        if same == 1:
            refs.append(Ref(f"the {e.colour} {e.category}", e.box))
        refs.append(Ref(f"the {e.category} {POSITION_PHRASES[e.position]}", e.box))
    return refs


def corpus(n: int = 8000) -> list[str]:
    """All texts of the first n train layouts plus the answers (tokenizer training corpus)."""
    texts: list[str] = []
    for layout, rng in iter_layouts("train", n):
        ex = [Exhibit(p.category, p.colour, p.size, p.position) for p in layout.exhibits]
        texts += [q.question for q in make_questions(ex, rng)]
        texts += make_captions(ex)
        texts += make_negative_captions(ex, rng)
        texts += [r.phrase for r in make_refs(ex)]
    texts += answer_vocabulary()
    return texts
