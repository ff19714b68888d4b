"""Train several recipes side by side and compare their validation metrics in one run.

Each spec is MODEL:STEPS:BATCH:LR[:KEY=VALUE,...] (e.g. museum-dual:1500:32:1e-3:dropout=0). Every spec trains in its
own process (`edgefuse train`), then `edgefuse eval --split val` measures it; the script
prints one table and writes summary.json plus, with --pack, one weights tarball per spec.
Used to choose the shipped recipes (on a lent GPU: `--device cuda --jobs 8`).

    python benchmarks/train_recipes.py museum-single:600:32:1e-3 museum-single:1200:32:1e-3 --work /tmp/sweep
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def run_spec(spec: str, work: Path, device: str, n_val: int, threads: int, eval_every: int = 0, pack: Path | None = None) -> dict:
    model, steps, batch, lr, *extra = spec.split(":")
    sets = [a for kv in extra for part in kv.split(",") if part for a in ("--set", part)]
    out = work / spec.replace(":", "_").replace(",", "_").replace("=", "")
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.call([sys.executable, "-m", "edgefuse.models.train_commands", "train", model, "--steps", steps, "--batch-size", batch,
                              "--lr", lr, "--out", str(out), "--device", device, "--threads", str(threads),
                              "--eval-every", str(eval_every), "--eval-n", "200", *sets],
                             stdout=f, stderr=subprocess.STDOUT)
        train_s = time.perf_counter() - t0
        metrics_path = out / "val_metrics.json"
        if rc == 0:
            rc = subprocess.call([sys.executable, "-m", "edgefuse.models.train_commands", "eval", model, "--split", "val", "--n", str(n_val),
                                  "--weights", str(out / "model.safetensors"), "--device", device,
                                  "--json", str(metrics_path)], stdout=f, stderr=subprocess.STDOUT)
    res = {"spec": spec, "rc": rc, "train_s": round(train_s, 1), "out": str(out)}
    if rc == 0:
        train_log = json.loads((out / "train_log.json").read_text())
        res["curve"] = [{k: round(v, 4) for k, v in h.items() if k == "step" or k == "loss" or k.startswith("val_")}
                        for h in train_log["loss_every_50"] if any(k.startswith("val_") for k in h)]
        m = json.loads(metrics_path.read_text())
        res.update({k: m[k] for k in ("vqa", "itm", "grounding", "captioning") if k in m})
        if pack is not None:
            pack_one(out, pack)
    print(summary_line(res), flush=True)
    if rc != 0:
        print("\n".join(log.read_text().splitlines()[-15:]), flush=True)
    return res


def pack_one(out: Path, pack: Path) -> None:
    """One tarball per spec, written as soon as the spec is done (so a cut-off run still returns it)."""
    pack.mkdir(parents=True, exist_ok=True)
    with tarfile.open(pack / f"{out.name}.tar.gz", "w:gz") as tar:
        for name in ("model.safetensors", "config.json", "tokenizer.json", "answers.json", "train_log.json", "val_metrics.json"):
            if (out / name).exists():
                tar.add(out / name, arcname=f"{out.name}/{name}")


def summary_line(r: dict) -> str:
    parts = [f"{r['spec']:<32} rc={r['rc']} train {r['train_s']:>6.1f} s"]
    if "vqa" in r:
        parts.append(f"vqa {r['vqa']['accuracy']:.4f}")
    if "itm" in r:
        parts.append(f"itm {r['itm']['accuracy']:.4f} auc {r['itm']['auc']:.4f}")
    if "grounding" in r:
        parts.append(f"iou {r['grounding']['mean_iou']:.4f} @.5 {r['grounding']['iou_at_0.5']:.4f}")
    if "captioning" in r:
        parts.append(f"bleu4 {r['captioning']['bleu4']:.4f} em {r['captioning']['exact_match']:.4f}")
    return "  ".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="+", help="MODEL:STEPS:BATCH:LR[:KEY=VALUE,...]")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgefuse-recipes"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    ap.add_argument("--n-val", type=int, default=500)
    ap.add_argument("--eval-every", type=int, default=0, help="val metrics on 200 images every N steps (the curve)")
    ap.add_argument("--pack", type=Path, default=None, help="folder for one weights tarball per spec + summary.json")
    args = ap.parse_args()
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda s: run_spec(s, args.work, args.device, args.n_val, args.threads, args.eval_every, args.pack), args.specs))
    for r in results:
        for point in r.get("curve", []):
            print(f"  {r['spec']} {point}")
    for r in results:
        print(summary_line(r), flush=True)
    return 0 if all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
