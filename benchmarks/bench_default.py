"""Record `edgefuse bench` on the default model: PyTorch eager vs ONNX FP32 / FP16 / INT8, side by side.

Everything runs through the CLI, in one go, so each figure in the result comes from a repo command:
  export museum-dual -> quantize fp16 and int8 -> build the FP16 TensorRT-RTX engine (build only:
  no GPU here can run it) -> bench (one process per variant, interleaved passes).
Writes benchmarks/results/bench_default.json and .md.

    python benchmarks/bench_default.py [--runs 30] [--passes 3] [--batch 1,8] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODEL = "museum-dual"


def sh(args: list[str], log: list[str]) -> float:
    """Run `python -m edgefuse ARGS` from the repo root; returns its wall time."""
    cmd = [sys.executable, "-m", "edgefuse", *args]
    line = "edgefuse " + " ".join(shlex.quote(a) for a in args)
    print(f"$ {line}", flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"failed ({done.returncode}): {line}")
    log.append(f"{line}  # {dt:.1f} s")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--threads", type=int, default=1)  # 1: stable on a shared 2-core machine (2 threads collapse under load)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    trained = (ROOT / "edgefuse" / "models" / "weights" / MODEL / "model.safetensors").is_file()
    log: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgefuse-bench-") as tmp:
        work = Path(tmp)
        fp32, fp16, int8, engine = work / "fp32", work / "fp16", work / "int8", work / "fp16-desktop-rtx"
        sh(["export", MODEL, "--out", str(fp32), *([] if trained else ["--random-init"])], log)
        sh(["quantize", str(fp32), "-p", "fp16", "--no-budget", "--eval-samples", "0", "--out", str(fp16)], log)
        sh(["quantize", str(fp32), "-p", "int8", "--no-budget", "--eval-samples", "0", "--out", str(int8)], log)
        engine_note = ""
        try:
            import tensorrt_rtx  # noqa: F401

            sh(["build", str(fp16), "--target", "desktop-rtx", "--out", str(engine)], log)
            m = json.loads((engine / "manifest.json").read_text())
            e = m["engines"][0]
            engine_note = (f"TensorRT-RTX {m['tensorrt_version']} FP16 engine for compute capability "
                           f"{', '.join(m['compute_capability'])}: {e['bytes'] / 1e6:.1f} MB, built in {e['build_seconds']:.1f} s "
                           "on this CPU; not benchmarked: no GPU here can run it (docs/hardware.md).")
        except ImportError:
            engine_note = "TensorRT-RTX not installed: engine build skipped."
        args.out.mkdir(parents=True, exist_ok=True)
        js, md = args.out / "bench_default.json", args.out / "bench_default.md"
        bench = ["bench", str(fp32), str(fp16), str(int8), "--torch", MODEL, "--batch", args.batch, "--runs", str(args.runs),
                 "--passes", str(args.passes), "--threads", str(args.threads), "--json", str(js), "--md", str(md)]
        if not trained:
            bench.append("--random-weights")
        sh(bench, log)
    result = json.loads(js.read_text())
    result["recorded_by"] = " ".join(["python benchmarks/bench_default.py", *(shlex.quote(a) for a in sys.argv[1:])])
    result["commands"] = log
    result["weights"] = "shipped trained weights" if trained else "random init (no trained weights yet; speed does not depend on them)"
    result["engine"] = engine_note
    js.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    table = md.read_text()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    variants = ("PyTorch eager FP32 (baseline) vs ONNX Runtime CPU FP32, FP16 (`edgefuse quantize -p fp16`) and INT8 QDQ "
                "(`edgefuse quantize -p int8`, ORT backend)")
    md.write_text(f"# edgefuse bench: {MODEL}\n\nRecorded {when} by `{result['recorded_by']}`. {variants}; "
                  f"weights: {result['weights']}. Artifacts are labelled by folder: fp32, fp16, int8.\n\n{table}\n"
                  f"{engine_note}\n\nCommands run (wall time):\n\n```\n" + "\n".join(log) + "\n```\n")
    print(md.read_text())


if __name__ == "__main__":
    main()
