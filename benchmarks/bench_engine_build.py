"""Record TensorRT-RTX engine builds for the zoo on this machine: size and build time per artifact.

Exports every zoo model (shipped weights when present, else random init: engine size and build
time do not depend on the weights), quantizes the default model to FP16 and INT8 QDQ, then runs
`edgefuse build --target desktop-rtx` on each (plus `--split` for the image-text models) and
records what TensorRT-RTX built or refused. Writes benchmarks/results/engine_build.{json,md};
docs/hardware.md quotes the table.

    python benchmarks/bench_engine_build.py
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
TARGET = "desktop-rtx"


def edgefuse(args: list[str]) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "edgefuse", *args], cwd=ROOT, capture_output=True, text=True)
    return done.returncode, (done.stdout + done.stderr).strip(), time.perf_counter() - t0


def main() -> None:
    import tensorrt_rtx

    from edgefuse.models.zoo import list_models

    rows: list[dict] = []
    commands: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgefuse-engines-") as tmp:
        work = Path(tmp)
        artifacts: list[tuple[str, str, Path, bool]] = []  # (model, precision, folder, image-text)
        for model in list_models():
            trained = (ROOT / "edgefuse" / "models" / "weights" / model / "model.safetensors").is_file()
            out = work / f"{model}-fp32"
            args = ["export", model, "--out", str(out), *([] if trained else ["--random-init"])]
            rc, log, dt = edgefuse(args)
            commands.append(f"edgefuse {shlex.join(args)}  # rc {rc}, {dt:.1f} s")
            if rc != 0:
                rows.append({"artifact": f"{model} fp32", "result": "export failed: " + log.splitlines()[-1][:200]})
                continue
            artifacts.append((model, "fp32", out, model != "museum-caption"))
            if model == "museum-dual":
                for p in ("fp16", "int8"):
                    q = work / f"{model}-{p}"
                    args = ["quantize", str(out), "-p", p, "--no-budget", "--eval-samples", "0", "--out", str(q)]
                    rc, log, dt = edgefuse(args)
                    commands.append(f"edgefuse {shlex.join(args)}  # rc {rc}, {dt:.1f} s")
                    if rc == 0:
                        artifacts.append((model, p, q, False))
        for model, precision, folder, splittable in artifacts:
            for split in ([False, True] if splittable else [False]):
                out = work / f"{folder.name}-{TARGET}{'-split' if split else ''}"
                args = ["build", str(folder), "--target", TARGET, "--out", str(out), "--split" if split else "--no-split"]
                rc, log, dt = edgefuse(args)
                commands.append(f"edgefuse {shlex.join(args)}  # rc {rc}, {dt:.1f} s")
                row = {"artifact": f"{model} {precision}" + (" --split" if split else ""), "wall_s": round(dt, 1)}
                if rc == 0:
                    m = json.loads((out / "manifest.json").read_text())
                    row.update(result="built", engines=[{"file": e["file"], "mb": round(e["bytes"] / 1e6, 2),
                                                         "build_s": e["build_seconds"]} for e in m["engines"]],
                               tensorrt=m["tensorrt_version"], compute_capability=m["compute_capability"])
                else:
                    row["result"] = "refused: " + next((ln for ln in log.splitlines() if ln.startswith("error")), log[-200:])
                rows.append(row)
                print(row, flush=True)
    result = {"target": TARGET, "tensorrt_rtx": tensorrt_rtx.__version__, "rows": rows, "commands": commands,
              "recorded": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "recorded_by": "python benchmarks/bench_engine_build.py"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "engine_build.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# TensorRT-RTX engine builds ({TARGET})", "",
             f"Recorded {result['recorded']} by `{result['recorded_by']}` on the CPU machine (no GPU), TensorRT-RTX "
             f"{result['tensorrt_rtx']}. Sizes and build times of each engine; the machine was shared with other jobs, so times vary.",
             "", "| artifact | result | engine: MB, build s |", "|---|---|---|"]
    for r in rows:
        eng = "; ".join(f"{e['file']}: {e['mb']} MB, {e['build_s']:.1f} s" for e in r.get("engines", []))
        lines.append(f"| {r['artifact']} | {r['result'].replace('|', '/')} | {eng} |")
    lines += ["", "Commands:", "", "```", *commands, "```", ""]
    (RESULTS / "engine_build.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
