"""Are the museum exhibits recognisable at the models' 64 px? A learnability probe.

Trains a small CNN (not a zoo model) on the train split, preprocessed exactly as the models see
it (`preprocess_images(..., size=64)`), to read each slot's exhibit: category (or empty),
colour and size. Reports val accuracy per attribute and the share of images read entirely
right. High numbers mean the pixels carry the answers at 64 px; the zoo's VQA ceiling is then
about the fusion model, not the data.

    python benchmarks/probe_data.py [--n-train 8000] [--epochs 12] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgefuse.data import museum  # noqa: E402
from edgefuse.data.preprocess import preprocess_images  # noqa: E402

EMPTY = "-"


def targets(items: list[museum.MuseumItem]) -> dict[str, np.ndarray]:
    """[N, 3] class index per slot for each attribute; index 0 = empty slot."""
    vocab = {"category": [EMPTY, *museum.CATEGORIES], "colour": [EMPTY, *museum.COLOURS], "size": [EMPTY, *museum.SIZES]}
    out = {k: np.zeros((len(items), 3), np.int64) for k in vocab}
    for i, it in enumerate(items):
        for e in it.exhibits:
            s = museum.POSITIONS.index(e.position)
            for k, names in vocab.items():
                out[k][i, s] = names.index(getattr(e, k))
    return out


def main() -> int:
    import torch
    from torch import nn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=8000)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.manual_seed(0)

    t0 = time.perf_counter()
    train, val = museum.generate("train", args.n_train), museum.generate("val")
    xs = {n: torch.from_numpy(preprocess_images([it.image for it in items], size=64)) for n, items in (("train", train), ("val", val))}
    ys = {n: {k: torch.from_numpy(v) for k, v in targets(items).items()} for n, items in (("train", train), ("val", val))}
    t_data = time.perf_counter() - t0
    sizes = {"category": 1 + len(museum.CATEGORIES), "colour": 1 + len(museum.COLOURS), "size": 1 + len(museum.SIZES)}

    def block(i: int, o: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    body = nn.Sequential(block(3, 32), block(32, 64), block(64, 128), block(128, 128), nn.Flatten())  # 64 -> 4x4
    heads = nn.ModuleDict({k: nn.Linear(128 * 16, 3 * c) for k, c in sizes.items()})
    model = nn.ModuleDict({"body": body, "heads": heads}).to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = args.epochs * ((len(train) + 127) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)

    def forward(x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = model["body"](x)
        return {k: model["heads"][k](f).view(len(x), 3, sizes[k]) for k in sizes}

    t1 = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        perm = torch.randperm(len(train))
        for i in range(0, len(train), 128):
            idx = perm[i : i + 128]
            out = forward(xs["train"][idx].to(args.device))
            loss = sum(nn.functional.cross_entropy(out[k].reshape(-1, sizes[k]), ys["train"][k][idx].to(args.device).reshape(-1)) for k in sizes)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    t_train = time.perf_counter() - t1

    model.eval()
    with torch.no_grad():
        out = forward(xs["val"].to(args.device))
    y = ys["val"]
    occupied = y["category"] > 0
    result: dict[str, float] = {}
    all_right = torch.ones(len(val), dtype=torch.bool)
    for k in sizes:
        pred = out[k].argmax(-1).cpu()
        right = pred == y[k]
        mask = torch.ones_like(right) if k == "category" else occupied  # colour/size: occupied slots only
        result[f"{k} accuracy (slots{'' if k == 'category' else ', occupied'})"] = float(right[mask].float().mean())
        all_right &= (right | ~mask).all(1)
    result["images read entirely right"] = float(all_right.float().mean())
    for k, v in result.items():
        print(f"{k:45s} {100 * v:6.2f} %")
    print(f"train {len(train)} / val {len(val)} images, {args.epochs} epochs on {args.device}; "
          f"data {t_data:.1f} s, training {t_train:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"val": result, "n_train": len(train), "epochs": args.epochs, "device": args.device}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
