"""edgefuse quantization vs the usual defaults on the default dual-stream model, side by side.

One run: exports (or takes) the FP32 museum-dual artifact, builds every variant, measures
accuracy on labelled museum val data (VQA accuracy, top-1 agreement with FP32, output SQNR)
and file size in this process, then latency at batch 1 with ONE PROCESS PER VARIANT and
interleaved passes (NOTES.md: sessions and torch in one process inflate each other).

Variants: PyTorch FP32 eager (the baseline of every speed-up), ORT FP32, edgefuse FP16,
edgefuse INT8 (ORT backend, TensorRT-style QDQ), edgefuse INT8 --for-cpu (per-tensor 7-bit weights),
edgefuse INT8 (NNCF backend), ORT quantize_static defaults, ORT quantize_dynamic, NNCF
defaults, and Optimum's AutoQuantizationConfig when optimum is installed (else a note).

    nice -n 10 python benchmarks/quantize_compare.py [--passes 5] [--iters 40] [--threads 2]
        [--artifact DIR] [--calib 128] [--eval 300] [--md benchmarks/results/quantize_compare.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ---- worker: one process, one variant, one latency figure ---------------------------------------


def worker(kind: str, path: str, threads: int, iters: int, feed_file: str) -> None:
    import numpy as np

    feed = dict(np.load(feed_file))
    if kind == "torch":
        import torch

        from edgefuse.models.zoo import load_model

        torch.set_num_threads(threads)
        spec = json.loads(path)
        from edgefuse.models.zoo import get_entry

        shipped = get_entry(spec["model"]).weights_file.exists()
        model = load_model(spec["model"], pretrained=shipped).eval()  # latency does not depend on the weight values
        args = [torch.from_numpy(feed[k]) for k in ("pixel_values", "input_ids", "attention_mask")]

        def run() -> None:
            with torch.inference_mode():
                model(*args)
    else:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"], disabled_optimizers=["NchwcTransformer"])

        def run() -> None:
            sess.run(None, feed)
    for _ in range(max(5, iters // 5)):
        run()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1000.0)
    print(json.dumps({"median_ms": statistics.median(times)}))


# ---- variants ---------------------------------------------------------------------------------


def build_variants(fp32: Path, work: Path, calib_n: int, eval_n: int, log) -> tuple[dict, dict]:
    import numpy as np
    import onnx

    from edgefuse.calibration import build_calibration
    from edgefuse.calibration.reader import FeedReader
    from edgefuse.data.preprocess import PreprocessConfig, Preprocessor
    from edgefuse.data.tokenizer import Tokenizer
    from edgefuse.quantize import evaluate as ev
    from edgefuse.quantize.api import CalibrationOptions, QuantizeOptions, quantize_artifact
    from edgefuse.quantize.configs import Fp16Config, Int8NncfConfig, Int8OrtConfig

    manifest = json.loads((fp32 / "manifest.json").read_text())
    pcfg = PreprocessConfig.from_dict(manifest["preprocess"]) if "preprocess" in manifest else PreprocessConfig()
    tok = Tokenizer.load(fp32 / "tokenizer.json")
    cal = CalibrationOptions(num_samples=calib_n, cache_dir=str(work / "cache"))
    opts = QuantizeOptions(eval_samples=0, sensitivity=False, overwrite=True, threads=2, created_by="benchmarks/quantize_compare.py")
    paths: dict[str, Path] = {"ORT FP32": fp32 / "model.onnx"}
    notes: dict[str, str] = {}
    timing: dict[str, float] = {}
    for name, cfg in [("edgefuse FP16", Fp16Config()), ("edgefuse INT8 ort (TensorRT QDQ)", Int8OrtConfig()),
                      ("edgefuse INT8 ort --for-cpu (per-tensor 7-bit weights)", Int8OrtConfig(per_channel=False, reduce_range=True)),
                      ("edgefuse INT8 nncf", Int8NncfConfig())]:
        t = time.perf_counter()
        res = quantize_artifact(fp32, cfg, work / name.split(" (")[0].replace(" ", "-").replace(",", ""), cal, opts)
        timing[name] = time.perf_counter() - t
        paths[name] = res.folder / "model.onnx"
        log(f"built {name} in {timing[name]:.1f} s")
    calib = build_calibration("museum", calib_n, 0, pcfg, tok)
    model = onnx.load(str(fp32 / "model.onnx"))
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

    t = time.perf_counter()
    p = work / "ort-static-defaults.onnx"
    fixed = Preprocessor(pcfg, tok)  # same pairs, padded to one length (ORT's calibrators stack a pass)
    feeds32 = [fixed([pr.image], [pr.text], pad_to=pcfg.max_text_length) for pr in calib.pairs]
    try:
        quantize_static(str(fp32 / "model.onnx"), str(p), FeedReader(feeds32), quant_format=QuantFormat.QDQ)
        paths["ORT quantize_static defaults"] = p
    except Exception as e:  # noqa: BLE001 - record what the default does
        notes["ORT quantize_static defaults"] = f"failed: {str(e).splitlines()[0][:120]}"
    timing["ORT quantize_static defaults"] = time.perf_counter() - t
    t = time.perf_counter()
    p = work / "ort-dynamic.onnx"
    quantize_dynamic(str(fp32 / "model.onnx"), str(p))
    paths["ORT quantize_dynamic"] = p
    timing["ORT quantize_dynamic"] = time.perf_counter() - t
    t = time.perf_counter()
    try:
        import nncf

        q = nncf.quantize(model, nncf.Dataset(calib.feeds), subset_size=len(calib.feeds))
        p = work / "nncf-defaults.onnx"
        onnx.save(q, str(p))
        paths["NNCF defaults"] = p
    except Exception as e:  # noqa: BLE001
        notes["NNCF defaults"] = f"failed: {str(e).splitlines()[0][:120]}"
    timing["NNCF defaults"] = time.perf_counter() - t
    try:
        import optimum  # noqa: F401

        notes["Optimum AutoQuantizationConfig"] = "optimum installed but not wired in this script"
    except ImportError:
        notes["Optimum AutoQuantizationConfig"] = "not run: optimum is not installed (optimum-onnx pins transformers<4.58, NOTES.md)"

    # accuracy, in this process (sessions one at a time)
    es = ev.build_eval_set([o.name for o in model.graph.output], json.loads((fp32 / "answers.json").read_text()),
                           Preprocessor(pcfg, tok), n=eval_n)
    sq_feeds = calib.feeds[:32]
    ref_cpu = ev.run_tasks(model, es, "cpu", 2)
    ref_metrics = ev.task_metrics(es, ref_cpu)
    ref_out = ev.run_model(ev.make_session(model, "cpu", 2), sq_feeds)
    rows: dict[str, dict] = {}
    fp32_size = (fp32 / "model.onnx").stat().st_size
    for name, path in paths.items():
        m = onnx.load(str(path))
        row: dict = {"size_ratio": path.stat().st_size / fp32_size, "build_s": timing.get(name)}
        for mode in ("cpu", "simulated"):
            run = ev.run_tasks(m, es, mode, 2)
            vals = ev.task_metrics(es, run, ref_cpu)
            row[mode] = {"vqa_accuracy": vals.get("vqa_accuracy"), "vqa_drop": ref_metrics["vqa_accuracy"] - vals["vqa_accuracy"],
                         "vqa_agreement": vals.get("vqa_agreement"),
                         "min_sqnr_db": min(ev.output_sqnr(ref_out, ev.run_model(ev.make_session(m, mode, 2), sq_feeds)).values())}
        rows[name] = row
        log(f"measured {name}: {row['cpu']}")
    meta = {"reference": ref_metrics, "eval_samples": es.sizes, "notes": notes, "feed": None, "host": _machine()}
    # the batch-1 latency input: one museum val question
    from edgefuse.data import museum

    it = museum.generate("val", n=1)[0]
    feed = Preprocessor(pcfg, tok)([it.image], [it.questions[0].question])
    np.savez(work / "feed.npz", **feed)
    meta["feed"] = {k: list(v.shape) for k, v in feed.items()}
    return {k: str(v) for k, v in paths.items()}, {"rows": rows, **meta}


def _machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()} {model}, {os.cpu_count()} cores"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", type=Path, default=None, help="FP32 museum-dual artifact (default: export one)")
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib", type=int, default=128)
    ap.add_argument("--eval", type=int, default=300)
    ap.add_argument("--md", type=Path, default=ROOT / "benchmarks/results/quantize_compare.md")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/quantize_compare.json")
    ap.add_argument("--work", type=Path, default=None, help="folder for the variants (default: a temp folder)")
    ap.add_argument("--time-only", type=Path, default=None, help="only time the variants of an earlier run's --work folder")
    ap.add_argument("--machine", default=None, help="text describing the machine, for the table")
    ap.add_argument("--worker", nargs=4, metavar=("KIND", "PATH", "ITERS", "FEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, path, iters, feed = args.worker
        worker(kind, path, args.threads, int(iters), feed)
        return 0

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    if args.time_only:  # a folder written by an earlier run (e.g. copied to a quieter machine)
        work = args.time_only.resolve()
        state = json.loads((work / "state.json").read_text())
        manifest = state["manifest"]
        paths = {k: str(work / v) for k, v in state["paths"].items()}
        acc = state["acc"]
    else:
        work = Path(args.work or tempfile.mkdtemp(prefix="edgefuse-qbench-")).resolve()
        work.mkdir(parents=True, exist_ok=True)
        fp32 = args.artifact
        if fp32 is None:
            from edgefuse.export.exporter import export_model

            fp32 = export_model("museum-dual", work / "museum-dual-fp32", overwrite=True,
                                created_by="benchmarks/quantize_compare.py").folder
            log(f"exported {fp32}")
        manifest = json.loads((fp32 / "manifest.json").read_text())
        paths, acc = build_variants(fp32, work, args.calib, args.eval, log)
        rel = {}
        for k, v in paths.items():  # self-contained folder: copy every variant beside state.json
            name = k.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "") + ".onnx"
            if Path(v).resolve() != (work / name).resolve():
                shutil.copyfile(v, work / name)
            rel[k] = name
        (work / "state.json").write_text(json.dumps({"manifest": {k: manifest.get(k) for k in ("model", "weights_source")},
                                                     "paths": rel, "acc": acc}, indent=1, default=str))
        paths = {k: str(work / v) for k, v in rel.items()}
        log(f"variants in {work}")
    torch_spec = json.dumps({"model": manifest.get("model", "museum-dual")})
    load0 = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    variants = {"PyTorch FP32 eager": ("torch", torch_spec), **{k: ("onnx", v) for k, v in paths.items()}}
    lat: dict[str, list[float]] = {k: [] for k in variants}
    for p in range(args.passes):
        for name, (kind, path) in variants.items():
            r = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--worker", kind, path, str(args.iters),
                                str(work / "feed.npz")], capture_output=True, text=True, cwd=ROOT)
            if r.returncode != 0:
                log(f"{name} failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
                continue
            lat[name].append(json.loads(r.stdout.strip().splitlines()[-1])["median_ms"])
        log(f"pass {p + 1}/{args.passes} done")
    med = {k: statistics.median(v) if v else float("nan") for k, v in lat.items()}
    base = med["PyTorch FP32 eager"]
    rows = acc["rows"]
    lines = [
        "# Quantization compared (museum-dual, batch 1, CPU)",
        "",
        f"Command: `{shlex.join(['python', 'benchmarks/quantize_compare.py', *sys.argv[1:]])}`",
        "",
        f"Machine: {args.machine or _machine()}, python {platform.python_version()}, load average at start "
        f"{load0}; "
        f"weights: {manifest.get('weights_source', 'shipped')}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"Latency: median over {args.passes} interleaved passes of per-process medians ({args.iters} runs after warm-up), "
        f"{args.threads} threads, one process per variant. Input: one museum val question {acc['feed']}.",
        f"Accuracy: {acc['eval_samples']} labelled museum val samples; FP32 ORT VQA accuracy {acc['reference'].get('vqa_accuracy', 0):.2f} %. "
        "'CPU kernels' = ORT graph optimisations on (the integer kernels of this host); "
        "'simulated' = optimisations off (Q/DQ as float math, how TensorRT computes a QDQ graph)."
        + (f" Accuracy and file sizes come from the run that built the variants ({acc.get('host', 'the project machine')}); "
           "only the latencies were measured here." if args.time_only else ""),
        "",
        "| variant | latency ms | speed-up vs eager | VQA acc % (CPU) | VQA drop pt (CPU) | top-1 agree % (CPU) | min SQNR dB (CPU) "
        "| VQA drop pt (simulated) | min SQNR dB (simulated) | file vs FP32 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines.append(f"| PyTorch FP32 eager | {base:.2f} | 1.00x | | | | | | | |")
    for name in paths:
        r = rows[name]
        c, s = r["cpu"], r["simulated"]
        lines.append(f"| {name} | {med[name]:.2f} | {base / med[name]:.2f}x | {c['vqa_accuracy']:.2f} | {c['vqa_drop']:.2f} | "
                     f"{c['vqa_agreement']:.1f} | {c['min_sqnr_db']:.1f} | {s['vqa_drop']:.2f} | {s['min_sqnr_db']:.1f} | "
                     f"{100 * r['size_ratio']:.0f} % |")
    lines += ["", "Per-pass latencies (ms): " + "; ".join(f"{k}: {', '.join(f'{x:.1f}' for x in v)}" for k, v in lat.items()), ""]
    for k, v in acc["notes"].items():
        lines.append(f"- {k}: {v}")
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text("\n".join(lines) + "\n")
    args.json.write_text(json.dumps({"latency_ms": lat, "median_ms": med, **acc}, indent=1, default=str) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
