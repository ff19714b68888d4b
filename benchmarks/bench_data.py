"""Speed of the data room, side by side in one run: scene generation, image preprocessing,
tokenization and writing a dataset folder. Medians of interleaved passes, one thread.

Target from the data brief: generation < 2 ms per 128 px image (8000 training scenes in < 16 s).

    nice -n 10 python benchmarks/bench_data.py [--n 300] [--passes 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from edgefuse.data import museum  # noqa: E402
from edgefuse.data.dataset import write_dataset  # noqa: E402
from edgefuse.data.preprocess import preprocess_images  # noqa: E402
from edgefuse.data.tokenizer import default_tokenizer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="images per pass")
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args()

    items = museum.generate("train", args.n)  # warm-up, and the inputs of the other stages
    images = [it.image for it in items]
    texts = [q.question for it in items for q in it.questions] + [c for it in items for c in it.captions]
    tok = default_tokenizer()
    preprocess_images(images[:8])

    def gen() -> int:
        museum.generate("train", args.n)
        return args.n

    def prep() -> int:
        preprocess_images(images, size=64)
        return len(images)

    def tokenize() -> int:
        for i in range(0, len(texts), 64):
            tok.encode_batch(texts[i : i + 64], max_length=32)
        return len(texts)

    def write() -> int:
        with tempfile.TemporaryDirectory() as d:
            write_dataset(items, Path(d) / "ds")
        return len(items)

    stages = {"generate (per image)": gen, "preprocess 128->64 (per image)": prep,
              "tokenize, batches of 64 (per text)": tokenize, "write_dataset PNG+JSONL (per image)": write}
    times: dict[str, list[float]] = {k: [] for k in stages}
    for _ in range(args.passes):  # interleaved: load changes on this shared machine hit all stages alike
        for name, fn in stages.items():
            t = time.perf_counter()
            count = fn()
            times[name].append((time.perf_counter() - t) / count * 1e3)

    rows = {k: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v)} for k, v in times.items()}
    print(f"{'stage':40s} {'median ms':>10s} {'min':>8s} {'max':>8s}")
    for k, r in rows.items():
        print(f"{k:40s} {r['median_ms']:10.4f} {r['min_ms']:8.4f} {r['max_ms']:8.4f}")
    per_train = rows["generate (per image)"]["median_ms"] * museum.SPLITS["train"][0] / 1e3
    print(f"train split ({museum.SPLITS['train'][0]} images) at the median: {per_train:.1f} s")
    print(f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}, "
          f"n={args.n}, passes={args.passes}")
    if args.json:
        args.json.write_text(json.dumps({"stages": rows, "n": args.n, "passes": args.passes,
                                         "load": os.getloadavg()[0]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
