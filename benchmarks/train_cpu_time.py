"""How long the committed `edgefuse train MODEL` takes on this CPU: time N steps, extrapolate.

Renders the train split once (timed: every `edgefuse train` run pays it), then for each model
runs the shipped recipe's first N optimizer steps after one warm-up step and reports wall
and process CPU seconds per step, extrapolated to the recipe's step count. The host's load
average is printed beside the figures, since a shared machine inflates wall time.

    nice -n 10 python benchmarks/train_cpu_time.py --steps 20 --json /tmp/train_cpu_time.json
"""

from __future__ import annotations

import sys
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import argparse
import json
import os
import time

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["museum-dual", "museum-single", "museum-gated", "museum-caption"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default: all cores)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from edgefuse.data.museum import answer_vocabulary, generate
    from edgefuse.data.tokenizer import default_tokenizer
    from edgefuse.models.train import Trainer, recipe, render_items

    t0 = time.perf_counter()
    items = generate("train")
    data = render_items(items, default_tokenizer(), answer_vocabulary(), 64, 32)
    del items
    render_s = time.perf_counter() - t0
    print(f"render train split ({data.n_images} images): {render_s:.1f} s  load {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for name in args.models:
        cfg = recipe(name)
        trainer = Trainer(cfg, data=data)
        trainer.step()  # warm-up (allocations, first-call overheads)
        w0, c0, l0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
        for _ in range(args.steps):
            trainer.step()
        wall = (time.perf_counter() - w0) / args.steps
        cpu = (time.process_time() - c0) / args.steps
        load = (l0 + os.getloadavg()[0]) / 2
        row = {"model": name, "recipe_steps": cfg.steps, "batch_size": cfg.batch_size, "timed_steps": args.steps,
               "threads": torch.get_num_threads(), "wall_s_per_step": round(wall, 3), "cpu_s_per_step": round(cpu, 3),
               "extrapolated_wall_min": round((wall * cfg.steps + render_s) / 60, 1),
               "extrapolated_cpu_min": round((cpu * cfg.steps) / 60, 1), "load_avg_1m": round(load, 1),
               "cores": os.cpu_count(), "slot_loss": cfg.loss_weights.get("slots", 0.0) > 0}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"render_s": round(render_s, 1), "torch": torch.__version__, "models": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
