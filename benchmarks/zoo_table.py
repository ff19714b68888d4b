"""Print the README's table of shipped zoo models from each model's metrics.json.

metrics.json is written by `edgefuse eval MODEL --split test --json ...` (see each card.md);
this script only formats it: `python benchmarks/zoo_table.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

WEIGHTS = Path(__file__).resolve().parents[1] / "edgefuse" / "models" / "weights"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def main() -> None:
    print("| model | tasks | params | VQA acc | ITM acc | grounding IoU>=0.5 | caption BLEU-4 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for folder in sorted(WEIGHTS.iterdir()):
        m = json.loads((folder / "metrics.json").read_text())
        cfg = json.loads((folder / "config.json").read_text())
        tasks = ", ".join(k for k in ("vqa", "itm", "grounding", "captioning") if k in m)
        vqa, itm, gr, cap = m.get("vqa", {}), m.get("itm", {}), m.get("grounding", {}), m.get("captioning", {})
        bleu = cap.get("bleu4")
        print(f"| {folder.name} | {tasks or cfg.get('family', '')} | {m['params'] / 1e6:.2f} M | {pct(vqa.get('accuracy'))} "
              f"| {pct(itm.get('accuracy'))} | {pct(gr.get('iou_at_0.5'))} | {'-' if bleu is None else f'{bleu:.3f}'} |")


if __name__ == "__main__":
    main()
