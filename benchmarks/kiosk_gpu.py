"""Kiosk on a GPU: ONNX Runtime CUDA EP (IO binding, CUDA graphs) vs PyTorch eager FP32, same run.

Measures batch-1 and batch-32 latency of (a) the model call from host arrays to host arrays and
(b) the whole kiosk pipeline (PNG bytes + questions -> answers: decode, preprocess, tokenize,
run, softmax), for PyTorch eager FP32 and for the ORT runners, interleaved in one process on
the same inputs, and checks the two agree (max |logit diff|, answer agreement).

    python benchmarks/kiosk_gpu.py --artifact DIR [--weights model.safetensors] [--out results.md]

Needs torch with CUDA and onnxruntime-gpu (import torch first: it loads the CUDA libraries).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timeit(fn: Callable[[], Any], iters: int, warmup: int, sync: Callable[[], None]) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"median_ms": statistics.median(times) * 1000, "p90_ms": times[int(0.9 * (len(times) - 1))] * 1000,
            "min_ms": times[0] * 1000}


def main(argv: list[str] | None = None) -> int:
    import torch  # first: loads the CUDA libraries onnxruntime-gpu needs

    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    from edgefuse.data.museum import generate
    from edgefuse.data.preprocess import preprocess_images
    from edgefuse.models.zoo import load_model
    from edgefuse.runtime.kiosk import KioskPipeline
    from edgefuse.runtime.runners import OrtRunner

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--weights", default=None, help="safetensors the artifact was exported from (default: the model's shipped weights)")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "kiosk_gpu.md"))
    ap.add_argument("--cpu-dry-run", action="store_true", help="check the script on a CPU machine (ORT CPU, no graphs)")
    args = ap.parse_args(argv)
    provider = "cpu" if args.cpu_dry_run else "cuda"

    art = Path(args.artifact)
    manifest = json.loads((art / "manifest.json").read_text())
    dev = torch.device(provider)
    torch.backends.cuda.matmul.allow_tf32 = False  # FP32 means FP32 on both sides
    torch.backends.cudnn.allow_tf32 = False
    random_init = str(manifest.get("weights_source", "")).startswith("random-init") and args.weights is None
    model = load_model(manifest["model"], weights=args.weights, pretrained=not random_init and args.weights is None).to(dev).eval()
    items = generate("test", n=32)
    pngs, questions = [], []
    for it in items:
        buf = io.BytesIO()
        Image.fromarray(it.image).save(buf, format="PNG")
        pngs.append(buf.getvalue())
        questions.append(it.questions[0].question)
    truth = [it.questions[0].answer for it in items]

    kiosk_io = KioskPipeline(art, provider=provider)
    kiosk_graph = KioskPipeline(art, provider=provider, runner_options={"cuda_graph": True} if provider == "cuda" else {})
    # TF32 (tensor cores for FP32 matmuls): ORT's CUDA EP default, off in the runner unless asked
    kiosk_tf32 = KioskPipeline(art, provider=provider, runner_options={"cuda_graph": True, "tf32": True} if provider == "cuda" else {})
    tok = kiosk_io.tokenizer
    answers = kiosk_io.answers
    sync = torch.cuda.synchronize if provider == "cuda" else (lambda: None)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if provider == "cuda" else f"CPU dry run ({platform.processor() or platform.machine()})", "torch": torch.__version__, "onnxruntime": ort.__version__,
        "python": platform.python_version(), "model": manifest["model"], "precision": manifest.get("precision"),
        "weights_source": manifest.get("weights_source"),
        "providers": kiosk_io.runner.providers, "results": {},
    }

    def eager_tf32(pv: np.ndarray, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            return eager_logits(pv, ids, mask)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = False

    def eager_logits(pv: np.ndarray, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(torch.from_numpy(pv).to(dev), torch.from_numpy(ids).to(dev), torch.from_numpy(mask).to(dev))
            return out["vqa_logits"].float().cpu().numpy()

    def eager_pipeline(imgs: list[bytes], qs: list[str]) -> list[str]:
        pv = kiosk_io.pixel_values(kiosk_io.load_images(imgs))
        ids, mask = kiosk_io.encode(qs)
        logits = eager_logits(pv, ids, mask)
        return [answers[i] for i in logits.argmax(-1)]

    for batch in (1, 32):
        imgs, qs = pngs[:batch], questions[:batch]
        pv = preprocess_images([Image.open(io.BytesIO(b)) for b in imgs], manifest["image_size"])
        ids, mask = tok.encode_batch(qs, manifest["max_text_length"])
        feed = {"pixel_values": pv, "input_ids": ids, "attention_mask": mask}
        ref = eager_logits(pv, ids, mask)
        got_io = kiosk_io.runner.infer(feed)["vqa_logits"]
        got_graph = kiosk_graph.runner.infer(feed)["vqa_logits"]
        got_graph = kiosk_graph.runner.infer(feed)["vqa_logits"]  # a replay, not the capture run
        got_tf32 = kiosk_tf32.runner.infer(feed)["vqa_logits"]
        got_tf32 = kiosk_tf32.runner.infer(feed)["vqa_logits"]
        parity = {"max_abs_diff_io": float(np.abs(ref - got_io).max()), "max_abs_diff_graph": float(np.abs(ref - got_graph).max()),
                  "argmax_agree_io": float((ref.argmax(-1) == got_io.argmax(-1)).mean()),
                  "argmax_agree_graph": float((ref.argmax(-1) == got_graph.argmax(-1)).mean()),
                  "max_abs_diff_tf32": float(np.abs(ref - got_tf32).max())}
        iters = args.iters if batch == 1 else max(5, args.iters // 2)
        rows = {}
        # interleave: each variant timed twice, in alternating order, best median kept
        variants = {
            "model: PyTorch eager FP32": lambda: eager_logits(pv, ids, mask),
            "model: ORT CUDA (IO binding)": lambda: kiosk_io.runner.infer(feed),
            "model: ORT CUDA (CUDA graph)": lambda: kiosk_graph.runner.infer(feed),
            "model: PyTorch eager TF32": lambda: eager_tf32(pv, ids, mask),
            "model: ORT CUDA (CUDA graph, TF32)": lambda: kiosk_tf32.runner.infer(feed),
            "pipeline: PyTorch eager FP32": lambda: eager_pipeline(imgs, qs),
            "pipeline: ORT CUDA (IO binding)": lambda: kiosk_io.ask_batch(imgs, qs),
            "pipeline: ORT CUDA (CUDA graph)": lambda: kiosk_graph.ask_batch(imgs, qs),
        }
        for rnd in range(2):
            order = list(variants) if rnd == 0 else list(reversed(variants))
            for name in order:
                r = timeit(variants[name], iters, 20, sync)
                if name not in rows or r["median_ms"] < rows[name]["median_ms"]:
                    rows[name] = r
        acc_eager = float(np.mean([a == t for a, t in zip(eager_pipeline(imgs, qs), truth[:batch], strict=True)]))
        acc_ort = float(np.mean([a.answer == t for a, t in zip(kiosk_graph.ask_batch(imgs, qs), truth[:batch], strict=True)]))
        report["results"][f"batch={batch}"] = {"latency": rows, "parity": parity, "accuracy_eager": acc_eager, "accuracy_ort": acc_ort,
                                               "cuda_graphs": len(kiosk_graph.runner._graphs)}
        print(json.dumps({f"batch={batch}": report["results"][f"batch={batch}"]}, indent=1), flush=True)
    # the runner falls back to IO binding when ORT refuses graphs for this model: report what ran
    report["cuda_graph_captured"] = bool(kiosk_graph.runner.cuda_graph)
    write_markdown(report, Path(args.out))
    return 0


def write_markdown(r: dict[str, Any], path: Path) -> None:
    lines = [
        "# Kiosk on GPU: ONNX Runtime CUDA EP vs PyTorch eager FP32",
        "",
        f"Produced by `python benchmarks/kiosk_gpu.py` in one process on **{r['device']}**; torch {r['torch']}, "
        f"onnxruntime {r['onnxruntime']}, Python {r['python']}. Model {r['model']} ({r['precision']}, weights: {r['weights_source']}); "
        f"providers {r['providers']}; CUDA graph captured: {r['cuda_graph_captured']}. Latency per call, host arrays in and out "
        "(model) or PNG bytes + questions in, answers out (pipeline); medians over the iterations, best of two interleaved passes. "
        "TF32 off except in the rows marked TF32 (compared with eager TF32).",
        "",
    ]
    for b, res in r["results"].items():
        lat = res["latency"]
        lines += [f"## {b}", "", "| variant | median (ms) | p90 (ms) | speed-up vs eager (same precision) |", "| --- | ---: | ---: | ---: |"]
        for name, v in lat.items():
            base = lat[("model" if name.startswith("model") else "pipeline") + ": PyTorch eager " + ("TF32" if "TF32" in name else "FP32")]["median_ms"]
            lines.append(f"| {name} | {v['median_ms']:.3f} | {v['p90_ms']:.3f} | {base / v['median_ms']:.2f}x |")
        p = res["parity"]
        lines += ["", f"Parity vs eager: max |vqa logit diff| {p['max_abs_diff_io']:.2e} (IO binding), {p['max_abs_diff_graph']:.2e} "
                  f"(CUDA graph), {p['max_abs_diff_tf32']:.2e} (CUDA graph with TF32); answer agreement {p['argmax_agree_io']:.3f} / {p['argmax_agree_graph']:.3f}. "
                  f"VQA accuracy on these {b.split('=')[1]} test questions: eager {res['accuracy_eager']:.3f}, ORT {res['accuracy_ort']:.3f}.", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
