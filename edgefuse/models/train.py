"""Training: the article's multi-task recipe for the museum zoo.

Loss = VQA cross-entropy + ITM cross-entropy (with hard negatives: the generator's
non-matching captions of the same scene plus the in-batch negative the model currently
scores highest) + masked language modelling on the fused text stream (a training-only head,
never exported) + grounding L1 + GIoU + captioning LM loss (teacher forcing). AdamW,
gradient accumulation, linear warmup then cosine decay. Seeded: the same seed gives the
same loss curve. Checkpoints are safetensors (tensors) + JSON (everything else), written
atomically, and resume bit-for-bit.

The training data is rendered once into arrays (images through edgefuse.data.preprocess, the
one preprocessing implementation; texts through the shipped tokenizer) so a CPU step
spends its time in the model, not in Pillow.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgefuse.artifacts import atomic_write_bytes, atomic_write_json
from edgefuse.errors import ConfigError, WeightsError

log = logging.getLogger(__name__)

CHECKPOINT_TENSORS = "checkpoint.safetensors"
CHECKPOINT_STATE = "checkpoint.json"
CHECKPOINT_VERSION = 1
IGNORE_INDEX = -100


# --------------------------------------------------------------------------- config
# Loss weights of the article's recipe; "slots" (the training-only slot head) is off unless a recipe sets it.
BASE_LOSS_WEIGHTS: dict[str, float] = {"vqa": 1.0, "itm": 1.0, "mlm": 0.5, "l1": 5.0, "giou": 2.0, "caption": 1.0}
@dataclass
class TrainConfig:
    """One training recipe. The per-model defaults in RECIPES are what produced the shipped weights."""

    model: str
    steps: int = 1200
    batch_size: int = 32  # images per micro-batch
    accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3
    min_lr_ratio: float = 0.02  # cosine decays to lr * min_lr_ratio
    warmup: int = 100  # optimizer steps of linear warmup
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    n_train: int | None = None  # training images (None = the generator's train split size)
    max_text_length: int = 32  # captions reach 25 tokens with [CLS] and [SEP]
    mlm_prob: float = 0.15
    questions_per_image: int = 2  # VQA rows per image per micro-batch
    hard_negatives: int = 3  # in-batch candidates scored per image for the hardest ITM negative
    loss_weights: dict[str, float] = field(default_factory=lambda: dict(BASE_LOSS_WEIGHTS))
    checkpoint_every: int = 200
    model_overrides: dict[str, Any] = field(default_factory=dict)  # zoo config keys, e.g. {"dropout": 0.0}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The recipes that trained the shipped weights (edgefuse train MODEL with no options uses them).
# Chosen by benchmarks/train_recipes.py on the validation split (see each weights/<name>/card.md).
RECIPES: dict[str, dict[str, Any]] = {
    "museum-dual": {"steps": 1200, "batch_size": 16, "lr": 1e-3, "warmup": 100, "mlm_prob": 0.4,
                    "questions_per_image": 1, "hard_negatives": 2, "model_overrides": {"dropout": 0}},
    "museum-single": {"steps": 1500, "batch_size": 32, "lr": 1e-3, "warmup": 100, "mlm_prob": 0.4,
                      "model_overrides": {"dropout": 0}, "loss_weights": {**BASE_LOSS_WEIGHTS, "slots": 1.0}},
    "museum-gated": {"steps": 1800, "batch_size": 32, "lr": 3e-4, "warmup": 100, "mlm_prob": 0.4,
                     "model_overrides": {"dropout": 0}, "loss_weights": {**BASE_LOSS_WEIGHTS, "slots": 1.0}},
    "museum-caption": {"steps": 2000, "batch_size": 32, "lr": 1e-3, "warmup": 100},
}


def recipe(model: str, settings: dict[str, Any] | None = None, **overrides: Any) -> TrainConfig:
    """The shipped recipe for `model`, with any non-None overrides applied.

    `settings` (from `--set KEY=VALUE`) may name TrainConfig fields or zoo config keys of the
    model (those go to `model_overrides`, e.g. dropout).
    """
    from edgefuse.errors import suggest
    from edgefuse.models.zoo import get_entry

    base = json.loads(json.dumps(RECIPES.get(model, {})))  # deep copy
    base.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(TrainConfig)} - {"model"}
    model_keys = set(get_entry(model).config)
    for key, value in (settings or {}).items():
        if key in names:
            base[key] = value
        elif key in model_keys:
            base.setdefault("model_overrides", {})[key] = value
        else:
            raise ConfigError(f"unknown training option '{key}'", suggest(key, names | model_keys), code="EF120")
    unknown = set(base) - names
    if unknown:
        raise ConfigError(f"unknown training option(s): {', '.join(sorted(unknown))}", suggest(sorted(unknown)[0], names), code="EF120")
    cfg = TrainConfig(model=model, **base)
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.accum < 1 or cfg.warmup < 0 or cfg.lr <= 0:
        raise ConfigError(
            f"invalid training options: steps={cfg.steps} batch_size={cfg.batch_size} accum={cfg.accum} warmup={cfg.warmup} lr={cfg.lr}",
            "steps, batch size and accum must be >= 1, warmup >= 0, lr > 0",
            code="EF121",
        )
    return cfg


# --------------------------------------------------------------------------- schedule
def lr_at(step: int, total: int, warmup: int, base_lr: float, min_ratio: float = 0.0) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine to base*min_ratio."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return base_lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


# --------------------------------------------------------------------------- losses
def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean (1 - GIoU) of (x, y, w, h) boxes (Rezatofighi et al. 2019)."""
    return (1.0 - box_giou(pred, target)).mean()


def box_giou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Elementwise generalized IoU of (x, y, w, h) boxes [N, 4] -> [N]."""
    ax0, ay0 = pred[:, 0], pred[:, 1]
    ax1, ay1 = ax0 + pred[:, 2], ay0 + pred[:, 3]
    bx0, by0 = target[:, 0], target[:, 1]
    bx1, by1 = bx0 + target[:, 2], by0 + target[:, 3]
    inter = (torch.minimum(ax1, bx1) - torch.maximum(ax0, bx0)).clamp(min=0) * (
        torch.minimum(ay1, by1) - torch.maximum(ay0, by0)
    ).clamp(min=0)
    union = pred[:, 2] * pred[:, 3] + target[:, 2] * target[:, 3] - inter
    iou = inter / union.clamp(min=1e-9)
    hull = (torch.maximum(ax1, bx1) - torch.minimum(ax0, bx0)) * (torch.maximum(ay1, by1) - torch.minimum(ay0, by0))
    return iou - (hull - union) / hull.clamp(min=1e-9)


def _museum_vocab() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    from edgefuse.data.museum import CATEGORIES, COLOURS, POSITIONS

    return tuple(POSITIONS), tuple(CATEGORIES), tuple(COLOURS)


SLOT_POSITIONS, SLOT_CATEGORIES, SLOT_COLOURS = _museum_vocab()


class SlotHead(nn.Module):
    """Training-only auxiliary head: exhibit category and colour in each third of the image.

    Patch tokens are averaged per column third (left / middle / right, where the museum's
    exhibits stand) and classified into category (+ "none") and colour (+ "none"): dense
    supervision that teaches the image tokens what each silhouette is. Not exported.
    """

    def __init__(self, width: int, grid: int) -> None:
        super().__init__()
        cols = (torch.arange(grid) + 0.5) / grid
        third = (cols * 3).floor().clamp(max=2).long()  # column -> slot
        weights = torch.zeros(3, grid * grid)
        for k in range(3):
            sel = (third[None, :] == k).expand(grid, grid).reshape(-1)
            weights[k, sel] = 1.0 / sel.sum()
        self.register_buffer("pool", weights, persistent=False)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, len(SLOT_CATEGORIES) + 1 + len(SLOT_COLOURS) + 1)

    def forward(self, image_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patches = image_tokens[:, 1:]  # drop the image [CLS]
        pooled = torch.einsum("kp,bpd->bkd", self.pool, patches)
        logits = self.out(self.norm(pooled))
        n_cat = len(SLOT_CATEGORIES) + 1
        return logits[..., :n_cat], logits[..., n_cat:]


class MLMHead(nn.Module):
    """Training-only masked-language head over fused text hidden states (BERT style)."""

    def __init__(self, width: int, vocab_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.decoder = nn.Linear(width, vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(F.gelu(self.dense(hidden))))


def mask_tokens(
    ids: torch.Tensor, attn: torch.Tensor, prob: float, mask_id: int, vocab_size: int, special: list[int], gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: of the chosen `prob` of real, non-special tokens 80 % -> [MASK], 10 % random, 10 % kept.

    At least one token per row is chosen so every row gives a loss. Returns (inputs, labels)
    with labels = IGNORE_INDEX where nothing is predicted.
    """
    eligible = attn.bool()
    for s in special:
        eligible &= ids != s
    u = torch.rand(ids.shape, generator=gen, device=ids.device)
    chosen = (u < prob) & eligible
    # force one masked token per row that has any eligible token: the eligible one with the smallest u
    u_masked = torch.where(eligible, u, torch.full_like(u, 2.0))
    first = torch.zeros_like(chosen)
    first.scatter_(1, u_masked.argmin(dim=1, keepdim=True), True)
    chosen |= first & eligible
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    r = torch.rand(ids.shape, generator=gen, device=ids.device)
    rand_ids = torch.randint(0, vocab_size, ids.shape, generator=gen, device=ids.device)
    inputs = torch.where(chosen & (r < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (r >= 0.8) & (r < 0.9), rand_ids, inputs)
    return inputs, labels


# --------------------------------------------------------------------------- data
@dataclass
class TextTable:
    """Tokenized texts of one kind, each tied to an image row."""

    image: np.ndarray  # int64 [N] row into TrainingData.images
    ids: np.ndarray  # int64 [N, L]
    mask: np.ndarray  # int64 [N, L]
    by_image: list[np.ndarray]  # per image: indices into this table

    @classmethod
    def build(cls, owners: list[int], texts: list[str], n_images: int, tokenizer: Any, max_length: int) -> "TextTable":
        if texts:
            ids, mask = tokenizer.encode_batch(texts, max_length=max_length, pad_to=max_length)
        else:
            ids = mask = np.zeros((0, max_length), dtype=np.int64)
        image = np.asarray(owners, dtype=np.int64)
        by_image = [np.flatnonzero(image == i) for i in range(n_images)]
        return cls(image, np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=np.int64), by_image)


@dataclass
class TrainingData:
    """A split rendered once into arrays: images preprocessed, every text tokenized."""

    images: np.ndarray  # float32 [N, 3, S, S]
    questions: TextTable
    answers: np.ndarray  # int64 [Q] answer index (-1 = answer outside the vocabulary)
    kinds: list[str]  # [Q] question kind
    captions: TextTable
    caption_texts: list[str]
    negatives: TextTable
    phrases: TextTable
    boxes: np.ndarray  # float32 [R, 4]
    slots: np.ndarray | None = None  # int64 [N, 3, 2]: (category, colour) per left/middle/right slot; -100 unknown

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])


def render_items(items: list[Any], tokenizer: Any, answers: list[str], image_size: int, max_text_length: int) -> TrainingData:
    """Render MuseumItems into arrays with the shared preprocessing and tokenizer."""
    from edgefuse.data.preprocess import preprocess_images

    n = len(items)
    images = preprocess_images([it.image for it in items], image_size).astype(np.float32)
    index = {a: i for i, a in enumerate(answers)}
    q_own, q_txt, q_ans, q_kind = [], [], [], []
    c_own, c_txt, n_own, n_txt, r_own, r_txt, r_box = [], [], [], [], [], [], []
    for i, it in enumerate(items):
        for qa in it.questions:
            q_own.append(i)
            q_txt.append(qa.question)
            q_ans.append(index.get(qa.answer, -1))
            q_kind.append(qa.kind)
        for c in it.captions:
            c_own.append(i)
            c_txt.append(c)
        for c in it.negative_captions:
            n_own.append(i)
            n_txt.append(c)
        for r in it.refs:
            r_own.append(i)
            r_txt.append(r.phrase)
            r_box.append(list(r.box))
    slots = np.full((n, len(SLOT_POSITIONS), 2), IGNORE_INDEX, dtype=np.int64)
    for i, it in enumerate(items):
        exhibits = getattr(it, "exhibits", None) or []
        if not exhibits:
            continue
        slots[i, :, 0], slots[i, :, 1] = len(SLOT_CATEGORIES), len(SLOT_COLOURS)  # "nothing here"
        for e in exhibits:
            if e.position in SLOT_POSITIONS and e.category in SLOT_CATEGORIES and e.colour in SLOT_COLOURS:
                k = SLOT_POSITIONS.index(e.position)
                slots[i, k] = (SLOT_CATEGORIES.index(e.category), SLOT_COLOURS.index(e.colour))
    L = max_text_length
    return TrainingData(
        images=images,
        questions=TextTable.build(q_own, q_txt, n, tokenizer, L),
        answers=np.asarray(q_ans, dtype=np.int64),
        kinds=q_kind,
        captions=TextTable.build(c_own, c_txt, n, tokenizer, L),
        caption_texts=c_txt,
        negatives=TextTable.build(n_own, n_txt, n, tokenizer, L),
        phrases=TextTable.build(r_own, r_txt, n, tokenizer, L),
        boxes=np.asarray(r_box, dtype=np.float32).reshape(-1, 4),
        slots=slots,
    )


# --------------------------------------------------------------------------- checkpoints
def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and plain JSON."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain_state: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        plain_state[str(idx)] = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                plain_state[str(idx)][k] = v
    return tensors, {"param_groups": sd["param_groups"], "state": plain_state}


def save_checkpoint(
    folder: Path,
    step: int,
    cfg: TrainConfig,
    model: nn.Module,
    aux: nn.Module,
    opt: torch.optim.Optimizer,
    rng: np.random.Generator,
    mask_gen: torch.Generator,
    history: list[dict[str, float]],
    torch_rng: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write model + training head + optimizer + RNG state: safetensors for tensors, JSON for the rest."""
    from safetensors.torch import save as st_save

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"aux.{k}": v.detach().cpu().contiguous() for k, v in aux.state_dict().items()})
    opt_t, opt_plain = _optimizer_tensors(opt)
    tensors.update(opt_t)
    tensors["rng.mask"] = mask_gen.get_state()
    for k, v in (torch_rng or {"torch": torch.get_rng_state()}).items():  # dropout RNG streams
        tensors[f"rng.{k}"] = v
    folder.mkdir(parents=True, exist_ok=True)
    # tensors first, then the JSON that names them: a crash in between leaves the old JSON, whose
    # step no longer matches the tensors' recorded step, and load_checkpoint refuses the pair.
    atomic_write_bytes(folder / CHECKPOINT_TENSORS, st_save(tensors, metadata={"step": str(step)}))
    state = {
        "version": CHECKPOINT_VERSION,
        "step": step,
        "config": cfg.to_dict(),
        "optimizer": opt_plain,
        "numpy_rng": rng.bit_generator.state,
        "history": history,
    }
    atomic_write_json(folder / CHECKPOINT_STATE, state)
    return folder


def load_checkpoint(
    folder: Path,
    model: nn.Module,
    aux: nn.Module,
    opt: torch.optim.Optimizer,
    rng: np.random.Generator,
    mask_gen: torch.Generator,
) -> tuple[int, dict[str, Any], list[dict[str, float]], dict[str, torch.Tensor]]:
    """Restore what save_checkpoint wrote; returns (step, saved config, loss history, dropout RNG states)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    tpath, jpath = folder / CHECKPOINT_TENSORS, folder / CHECKPOINT_STATE
    for p in (tpath, jpath):
        if not p.exists():
            raise WeightsError(f"no checkpoint file {p}", "train without --resume, or point --out at the run's folder", code="EF330")
    try:
        state = json.loads(jpath.read_text())
        tensors = load_file(str(tpath))
        from safetensors import safe_open

        with safe_open(str(tpath), "pt") as f:
            meta = f.metadata() or {}
    except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, OSError) as e:
        raise WeightsError(f"checkpoint in {folder} is unreadable: {e}", "delete it and train again", code="EF331") from e
    if state.get("version") != CHECKPOINT_VERSION or str(state.get("step")) != meta.get("step"):
        raise WeightsError(f"checkpoint in {folder} is inconsistent (step or version mismatch)", "delete it and train again", code="EF332")
    dev = next(model.parameters()).device

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    try:
        model.load_state_dict(part("model."))
        aux.load_state_dict(part("aux."))
    except RuntimeError as e:
        raise WeightsError(f"checkpoint in {folder} does not fit this model: {str(e).splitlines()[0]}", "resume with the same model and options", code="EF333") from e
    opt_state: dict[int, dict[str, Any]] = {}
    for idx, plain in state["optimizer"]["state"].items():
        opt_state[int(idx)] = dict(plain)
    for k, v in part("optim.").items():
        idx, name = k.split(".", 1)
        opt_state.setdefault(int(idx), {})[name] = v.to(dev) if name != "step" else v
    opt.load_state_dict({"state": opt_state, "param_groups": state["optimizer"]["param_groups"]})
    mask_gen.set_state(tensors["rng.mask"])
    rng.bit_generator.state = state["numpy_rng"]
    torch_rng = {k[4:]: v for k, v in tensors.items() if k.startswith("rng.") and k != "rng.mask"}
    return int(state["step"]), state["config"], list(state.get("history", [])), torch_rng


# --------------------------------------------------------------------------- batches
@dataclass
class Rows:
    """Rows of one forward pass: image index + tokens per row, plus per-task slices and targets."""

    image: list[int] = field(default_factory=list)
    ids: list[np.ndarray] = field(default_factory=list)
    mask: list[np.ndarray] = field(default_factory=list)

    def add(self, image: int, ids: np.ndarray, mask: np.ndarray) -> int:
        self.image.append(image)
        self.ids.append(ids)
        self.mask.append(mask)
        return len(self.image) - 1

    def tensors(self, images: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pixel values, ids and mask, with the text trimmed to the longest real row (dynamic text_length)."""
        ids = np.stack(self.ids)
        mask = np.stack(self.mask)
        width = max(int(mask.sum(axis=1).max()), 2)
        idx = torch.as_tensor(np.asarray(self.image, dtype=np.int64), device=images.device)
        return (
            images.index_select(0, idx).to(device),
            torch.as_tensor(ids[:, :width], device=device),
            torch.as_tensor(mask[:, :width], device=device),
        )


def _pick(rng: np.random.Generator, options: np.ndarray, k: int = 1) -> list[int]:
    if len(options) == 0:
        return []
    return [int(x) for x in rng.choice(options, size=min(k, len(options)), replace=False)]


class Trainer:
    """Holds model, training head, optimizer, data and RNGs; `step()` runs one optimizer step."""

    def __init__(self, cfg: TrainConfig, data: TrainingData | None = None, device: str = "cpu") -> None:
        from edgefuse.data.museum import answer_vocabulary, generate
        from edgefuse.data.tokenizer import default_tokenizer
        from edgefuse.models.zoo import build_model, get_entry

        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda but no CUDA GPU is visible to torch", "use --device cpu", code="EF122")
        self.cfg = cfg
        self.device = torch.device(device)
        self.entry = get_entry(cfg.model)
        self.tasks = list(self.entry.tasks)
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.mask_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.tokenizer = default_tokenizer()
        self.answers = answer_vocabulary()
        self.model = build_model(cfg.model, seed=cfg.seed, **cfg.model_overrides).to(self.device)
        self.model.train()
        self.image_size = int(self.model.config["image_size"])
        self.max_text_length = min(cfg.max_text_length, int(self.model.config["max_text_length"]))
        if data is None:
            t0 = time.perf_counter()
            items = generate("train", n=cfg.n_train)
            data = render_items(items, self.tokenizer, self.answers, self.image_size, self.max_text_length)
            log.info("rendered %d training images in %.1f s", data.n_images, time.perf_counter() - t0)
        self.data = data
        self.images = torch.as_tensor(data.images, device=self.device)
        self.caption_sets = [set(np.asarray(data.caption_texts, dtype=object)[rows].tolist()) for rows in data.captions.by_image]
        self.use_mlm = "captioning" not in self.tasks and cfg.loss_weights.get("mlm", 0.0) > 0
        self.use_slots = "captioning" not in self.tasks and cfg.loss_weights.get("slots", 0.0) > 0 and data.slots is not None
        self.aux = nn.ModuleDict()  # training-only heads, never exported
        if self.use_mlm:
            self.aux["mlm"] = MLMHead(self.model.dim, self.tokenizer.vocab_size)
        if self.use_slots:
            self.aux["slots"] = SlotHead(self.model.dim, self.image_size // int(self.model.config["patch_size"]))
        self.aux.to(self.device)
        decay, no_decay = [], []
        for module in (self.model, self.aux):
            for name, p in module.named_parameters():
                (decay if p.ndim >= 2 and "embed" not in name and "position" not in name else no_decay).append(p)
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
        )
        self.step_index = 0
        self.history: list[dict[str, float]] = []
        # Dropout draws from torch's global RNG; each trainer keeps its own stream (seeded above)
        # and swaps it in around its steps, so two trainers in one process never disturb each other.
        self.torch_rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            self.torch_rng["cuda"] = torch.cuda.get_rng_state(self.device)

    # ---- losses
    def micro_batch_loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        """Sample a micro-batch of images, build every task's rows, run one forward, return the loss."""
        cfg, d = self.cfg, self.data
        imgs = [int(i) for i in self.rng.choice(d.n_images, size=min(cfg.batch_size, d.n_images), replace=False)]
        if "captioning" in self.tasks:
            return self._caption_loss(imgs)
        rows = Rows()
        vqa_rows, vqa_targets = [], []
        itm_rows, itm_labels = [], []
        box_rows, box_targets = [], []
        if "vqa" in self.tasks:
            for i in imgs:
                for q in _pick(self.rng, d.questions.by_image[i], cfg.questions_per_image):
                    if d.answers[q] >= 0:
                        vqa_rows.append(rows.add(i, d.questions.ids[q], d.questions.mask[q]))
                        vqa_targets.append(int(d.answers[q]))
        if "itm" in self.tasks:
            pos = {i: _pick(self.rng, d.captions.by_image[i]) for i in imgs}
            for i in imgs:
                for c in pos[i]:
                    itm_rows.append(rows.add(i, d.captions.ids[c], d.captions.mask[c]))
                    itm_labels.append(1)
                for n in _pick(self.rng, d.negatives.by_image[i]):
                    itm_rows.append(rows.add(i, d.negatives.ids[n], d.negatives.mask[n]))
                    itm_labels.append(0)
            for i, c in self._hardest_in_batch(imgs, pos):
                itm_rows.append(rows.add(i, d.captions.ids[c], d.captions.mask[c]))
                itm_labels.append(0)
        if "grounding" in self.tasks:
            for i in imgs:
                for r in _pick(self.rng, d.phrases.by_image[i]):
                    box_rows.append(rows.add(i, d.phrases.ids[r], d.phrases.mask[r]))
                    box_targets.append(d.boxes[r])
        mlm_rows = []
        if self.use_mlm:
            for i in imgs:
                for c in _pick(self.rng, d.captions.by_image[i]):
                    mlm_rows.append(rows.add(i, d.captions.ids[c], d.captions.mask[c]))
        first_rows = {}
        for r, i in enumerate(rows.image):
            first_rows.setdefault(i, r)
        pix, ids, mask = rows.tensors(self.images, self.device)
        mlm_labels = None
        if mlm_rows:
            sel = torch.as_tensor(mlm_rows, device=self.device)
            masked, labels = mask_tokens(
                ids[sel].cpu(), mask[sel].cpu(), cfg.mlm_prob, self.tokenizer.mask_id, self.tokenizer.vocab_size,
                sorted(self.tokenizer.special_ids), self.mask_gen,
            )
            ids = ids.index_put((sel,), masked.to(self.device))
            mlm_labels = labels.to(self.device)
        from edgefuse.models.heads import run_heads

        feats = self.model.forward_features(pix, ids, mask)
        out = run_heads(self.model.heads, feats)
        w = cfg.loss_weights
        parts: dict[str, torch.Tensor] = {}
        dev = self.device
        if vqa_rows:
            parts["vqa"] = F.cross_entropy(out["vqa_logits"][vqa_rows], torch.as_tensor(vqa_targets, device=dev))
        if itm_rows:
            parts["itm"] = F.cross_entropy(out["itm_logits"][itm_rows], torch.as_tensor(itm_labels, device=dev))
        if box_rows:
            pred = out["box"][box_rows]
            tgt = torch.as_tensor(np.stack(box_targets), device=dev)
            parts["l1"] = F.l1_loss(pred, tgt)
            parts["giou"] = giou_loss(pred, tgt)
        if mlm_labels is not None:
            logits = self.aux["mlm"](feats["text_tokens"][mlm_rows])
            parts["mlm"] = F.cross_entropy(logits.flatten(0, 1), mlm_labels.flatten(), ignore_index=IGNORE_INDEX)
        known = [i for i in first_rows if d.slots is not None and (d.slots[i] != IGNORE_INDEX).any()]
        if self.use_slots and known:
            sel_rows = [first_rows[i] for i in known]
            target = torch.as_tensor(d.slots[known], device=dev)  # [n, 3, 2]
            cat_logits, col_logits = self.aux["slots"](feats["image_tokens"][sel_rows])
            parts["slots"] = F.cross_entropy(cat_logits.flatten(0, 1), target[..., 0].flatten(), ignore_index=IGNORE_INDEX) + \
                F.cross_entropy(col_logits.flatten(0, 1), target[..., 1].flatten(), ignore_index=IGNORE_INDEX)
        total = sum(w.get(k, 1.0) * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def _caption_loss(self, imgs: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        """Teacher forcing on the canonical caption (captions[0]): position t predicts token t + 1."""
        d = self.data
        rows = Rows()
        for i in imgs:
            c = d.captions.by_image[i]
            if len(c):
                rows.add(i, d.captions.ids[c[0]], d.captions.mask[c[0]])
        pix, ids, mask = rows.tensors(self.images, self.device)
        logits = self.model(pix, ids, mask)["caption_logits"]
        target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORE_INDEX)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), target.flatten(), ignore_index=IGNORE_INDEX)
        return self.cfg.loss_weights.get("caption", 1.0) * loss, {"caption": float(loss.detach())}

    @torch.no_grad()
    def _hardest_in_batch(self, imgs: list[int], pos: dict[int, list[int]]) -> list[tuple[int, int]]:
        """For each image, the other images' caption (not true of it) that the model scores most likely to match."""
        k = self.cfg.hard_negatives
        if k <= 0 or len(imgs) < 2:
            return []
        d = self.data
        cand = Rows()
        pairs: list[tuple[int, int]] = []
        for i in imgs:
            others = [c for j in imgs if j != i for c in pos[j] if d.caption_texts[c] not in self.caption_sets[i]]
            for c in _pick(self.rng, np.asarray(others, dtype=np.int64), k):
                cand.add(i, d.captions.ids[c], d.captions.mask[c])
                pairs.append((i, c))
        if not pairs:
            return []
        pix, ids, mask = cand.tensors(self.images, self.device)
        p_match = torch.softmax(self.model(pix, ids, mask)["itm_logits"], dim=-1)[:, 1].cpu().numpy()
        best: dict[int, tuple[float, int]] = {}
        for (i, c), p in zip(pairs, p_match):
            if i not in best or p > best[i][0]:
                best[i] = (float(p), c)
        return [(i, best[i][1]) for i in imgs if i in best]

    # ---- optimisation
    def step(self) -> dict[str, float]:
        """One optimizer step: `accum` micro-batches, clipped gradients, scheduled LR."""
        cfg = self.cfg
        lr = lr_at(self.step_index, cfg.steps, cfg.warmup, cfg.lr, cfg.min_lr_ratio)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        total = 0.0
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.set_rng_state(self.torch_rng["torch"])
            if cuda:
                torch.cuda.set_rng_state(self.torch_rng["cuda"], self.device)
            for _ in range(cfg.accum):
                loss, parts = self.micro_batch_loss()
                (loss / cfg.accum).backward()
                total += float(loss.detach()) / cfg.accum
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v / cfg.accum
            self.torch_rng["torch"] = torch.get_rng_state()
            if cuda:
                self.torch_rng["cuda"] = torch.cuda.get_rng_state(self.device)
        params = [p for m in (self.model, self.aux) for p in m.parameters()]
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip) if cfg.grad_clip > 0 else torch.zeros(())
        self.opt.step()
        self.step_index += 1
        record = {"step": self.step_index, "loss": total, "lr": lr, "grad_norm": float(gnorm), **sums}
        self.history.append(record)
        return record

    def validate(self, n: int) -> dict[str, float]:
        """Headline metrics on the first `n` val images (eval mode, no RNG used, so the loss curve is unchanged)."""
        from edgefuse.data.museum import generate
        from edgefuse.models.evaluate import evaluate_model

        if getattr(self, "_val_items", None) is None or len(self._val_items) != n:
            self._val_items = generate("val", n=n)
        self.model.eval()
        try:
            res = evaluate_model(self.model, self.tasks, self._val_items, device=str(self.device))
        finally:
            self.model.train()
        flat = {"val_vqa": res.get("vqa", {}).get("accuracy"), "val_itm": res.get("itm", {}).get("accuracy"),
                "val_iou50": res.get("grounding", {}).get("iou_at_0.5"), "val_bleu4": res.get("captioning", {}).get("bleu4")}
        return {k: float(v) for k, v in flat.items() if v is not None}

    def save_checkpoint(self, folder: Path) -> Path:
        return save_checkpoint(folder, self.step_index, self.cfg, self.model, self.aux, self.opt, self.rng, self.mask_gen,
                               self.history, self.torch_rng)

    def resume(self, folder: Path) -> None:
        """Restore a checkpoint; its recipe must match this one (only `steps` may grow)."""
        step, saved, history, torch_rng = load_checkpoint(folder, self.model, self.aux, self.opt, self.rng, self.mask_gen)
        mine = self.cfg.to_dict()
        diff = sorted(k for k in mine if k not in ("steps", "checkpoint_every") and saved.get(k) != mine[k])
        if diff:
            raise ConfigError(
                f"checkpoint in {folder} was trained with other options ({', '.join(diff)})",
                "resume with the same options, or start a new --out folder",
                code="EF123",
            )
        self.step_index = step
        self.history = history
        if "torch" in torch_rng:
            self.torch_rng["torch"] = torch_rng["torch"]
        if "cuda" in torch_rng and "cuda" in self.torch_rng:
            self.torch_rng["cuda"] = torch_rng["cuda"]


# --------------------------------------------------------------------------- entry point
@dataclass
class TrainResult:
    out: Path
    steps: int
    wall_s: float
    final: dict[str, float]
    history: list[dict[str, float]]


def train(
    cfg: TrainConfig,
    out: str | Path,
    resume: bool = False,
    device: str = "cpu",
    on_step: Callable[[dict[str, float]], None] | None = None,
    data: TrainingData | None = None,
    eval_every: int = 0,
    eval_n: int = 200,
) -> TrainResult:
    """Train `cfg.model` with the recipe `cfg`; write weights + tokenizer + answers + log to `out`.

    Checkpoints go to `out/checkpoint/` every `cfg.checkpoint_every` steps and at the end;
    `resume=True` continues from there. The weights are written only when training completes.
    """
    out = Path(out)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, data=data, device=device)
    ckpt = out / "checkpoint"
    if resume:
        trainer.resume(ckpt)
        log.info("resumed %s at step %d", cfg.model, trainer.step_index)
    while trainer.step_index < cfg.steps:
        record = trainer.step()
        if not math.isfinite(record["loss"]):
            from edgefuse.errors import EdgeFuseError

            raise EdgeFuseError(f"loss became {record['loss']} at step {record['step']}", "lower --lr or raise --warmup", code="EF340")
        if eval_every > 0 and (trainer.step_index % eval_every == 0 or trainer.step_index == cfg.steps):
            record.update(trainer.validate(eval_n))
        if on_step is not None:
            on_step(record)
        if cfg.checkpoint_every > 0 and trainer.step_index % cfg.checkpoint_every == 0:
            trainer.save_checkpoint(ckpt)
    trainer.save_checkpoint(ckpt)
    wall = time.perf_counter() - t0
    write_trained(trainer, out, wall, device)
    final = trainer.history[-1] if trainer.history else {}
    return TrainResult(out, trainer.step_index, wall, final, trainer.history)


def write_trained(trainer: Trainer, out: Path, wall_s: float, device: str) -> None:
    """The shipped-weights folder layout: model.safetensors, config.json, tokenizer.json, answers.json, train_log.json."""
    from edgefuse.models.zoo import save_weights

    trainer.model.eval()
    save_weights(trainer.model, out / "model.safetensors", metadata={"trained_by": "edgefuse train", "steps": str(trainer.step_index)})
    atomic_write_json(out / "config.json", {k: v for k, v in trainer.model.config.items() if k != "tasks"})
    trainer.tokenizer.save(out / "tokenizer.json")
    atomic_write_json(out / "answers.json", trainer.answers)
    atomic_write_json(
        out / "train_log.json",
        {
            "model": trainer.cfg.model,
            "recipe": trainer.cfg.to_dict(),
            "steps": trainer.step_index,
            "wall_s": round(wall_s, 1),
            "device": device if device == "cpu" else f"{device} ({torch.cuda.get_device_name(0)})",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "params": sum(p.numel() for p in trainer.model.parameters()),
            "loss_every_50": [h for h in trainer.history if h["step"] % 50 == 0 or h["step"] == trainer.step_index
                              or any(k.startswith("val_") for k in h)],
        },
    )
