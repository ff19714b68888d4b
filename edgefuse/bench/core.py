"""Side-by-side benchmarks: latency (median, p90), throughput and peak memory per variant.

A variant is PyTorch eager for a zoo model or any artifact a Runner opens (ONNX on ONNX
Runtime, TensorRT engines). Each variant lives in its own worker process (edgefuse.bench.worker)
for the whole run; passes are interleaved (variant A pass 1, B pass 1, A pass 2, ...), so
machine drift hits every variant alike, and all numbers of one table come from one run.
Ratios are against a baseline variant (PyTorch eager when present, else the first one):
speed-up = baseline median / variant median; memory ratio = variant peak RSS / baseline's.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefuse.errors import EdgeFuseError

log = logging.getLogger(__name__)


class BenchError(EdgeFuseError):
    code = "EF950"


@dataclass
class Variant:
    label: str
    kind: str  # torch | artifact
    model: str | None = None  # zoo name (torch)
    path: str | None = None  # artifact folder / file (artifact)
    provider: str = "cpu"
    threads: int = 0
    pretrained: bool = True  # torch: shipped weights; False = random init (same speed, for models without weights)

    def spec(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Row:
    variant: str
    backend: str
    batch: int
    text_length: int
    runs: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    throughput_per_s: float  # items (image-question pairs) per second at the median latency
    peak_rss_mb: float
    load_s: float
    model_rss_mb: float  # RSS growth from loading the variant
    speedup: float | None = None
    memory_ratio: float | None = None
    pass_medians_ms: list[float] = field(default_factory=list)


def _stats(latencies: Sequence[float]) -> tuple[float, float, float, float]:
    a = np.asarray(latencies, dtype=np.float64)
    return float(np.median(a)), float(np.percentile(a, 90)), float(a.mean()), float(a.min())


class _Worker:
    def __init__(self, variant: Variant) -> None:
        self.variant = variant
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen([sys.executable, "-m", "edgefuse.bench.worker", json.dumps(variant.spec())],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.info = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            err = (self.proc.stderr.read() if self.proc.stderr else "").strip().splitlines()
            raise BenchError(f"benchmark worker for {self.variant.label} died: {err[-1] if err else 'no output'}",
                             "run the variant alone (edgefuse ask / validate) to see why", code="EF951")
        msg = json.loads(line)
        if "error" in msg:
            e = msg["error"]
            raise BenchError(f"{self.variant.label}: {e.get('code')} {e.get('message')}", e.get("hint", ""), code="EF952")
        return msg

    def run(self, batch: int, text_length: int, runs: int, warmup: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"batch": batch, "text_length": text_length, "runs": runs, "warmup": warmup}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from edgefuse.artifacts import tool_versions

    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "versions": tool_versions("torch", "onnxruntime", "numpy", "tensorrt-rtx-cu13")}


def run_bench(
    variants: Sequence[Variant],
    batches: Sequence[int] = (1, 8),
    text_length: int = 16,
    runs: int = 20,
    warmup: int = 3,
    passes: int = 3,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Benchmark every variant at every batch size; returns a JSON-ready result with ratios."""
    if not variants:
        raise BenchError("nothing to benchmark", "give artifact folders and/or --torch MODEL", code="EF953")
    if runs < 1 or passes < 1 or warmup < 0 or not batches or min(batches) < 1:
        raise BenchError("runs, passes and batch sizes must be >= 1 (warmup >= 0)", "e.g. --runs 20 --passes 3 --batch 1,8",
                         code="EF954")
    batches = sorted(set(int(b) for b in batches))
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise BenchError(f"variant labels repeat: {labels}", "give each artifact once", code="EF955")
    load_start = os.getloadavg()[0]
    workers: list[_Worker] = []
    try:
        for v in variants:
            if progress:
                progress(f"loading {v.label}")
            workers.append(_Worker(v))
        samples: dict[tuple[str, int], list[list[float]]] = {}
        peaks: dict[tuple[str, int], float] = {}  # peak RSS the first time a batch ran (ascending batches)
        per_pass = max(1, runs // passes)
        for p in range(passes):
            n = per_pass if p < passes - 1 else runs - per_pass * (passes - 1)
            if n < 1:
                continue
            for b in batches:
                for w in workers:
                    if progress:
                        progress(f"pass {p + 1}/{passes} batch {b}: {w.variant.label}")
                    res = w.run(b, text_length, n, warmup if p == 0 else 1)
                    samples.setdefault((w.variant.label, b), []).append(res["latencies_ms"])
                    peaks.setdefault((w.variant.label, b), float(res["peak_rss_mb"]))
    finally:
        for w in workers:
            w.close()
    rows: list[Row] = []
    for w in workers:
        info = w.info
        for b in batches:
            passes_lat = samples[(w.variant.label, b)]
            flat = [x for pl in passes_lat for x in pl]
            med, p90, mean, mn = _stats(flat)
            rows.append(Row(w.variant.label, str(info.get("backend")), b, text_length, len(flat), med, p90, mean, mn,
                            b * 1000.0 / med, peaks[(w.variant.label, b)], float(info["load_s"]),
                            float(info["rss_after_load_mb"]) - float(info["rss_before_load_mb"]),
                            pass_medians_ms=[float(np.median(pl)) for pl in passes_lat]))
    baseline = next((v.label for v in variants if v.kind == "torch"), variants[0].label)
    for r in rows:
        base = next(x for x in rows if x.variant == baseline and x.batch == r.batch)
        r.speedup = base.median_ms / r.median_ms
        r.memory_ratio = r.peak_rss_mb / base.peak_rss_mb
    return {"baseline": baseline, "batches": list(batches), "text_length": text_length, "runs": runs, "passes": passes,
            "warmup": warmup, "machine": {**machine_info(), "loadavg_1min_start": load_start, "loadavg_1min_end": os.getloadavg()[0]},
            "variants": [v.spec() for v in variants],
            "rows": [asdict(r) for r in rows]}


def to_markdown(result: dict[str, Any]) -> str:
    lines = [f"Baseline: `{result['baseline']}`; text length {result['text_length']}; {result['runs']} runs per cell in "
             f"{result['passes']} interleaved passes; one process per variant.",
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; 1-minute load average "
             f"{result['machine'].get('loadavg_1min_start', float('nan')):.1f} at the start, "
             f"{result['machine'].get('loadavg_1min_end', float('nan')):.1f} at the end (other jobs inflate latency and spread). "
             "Peak RSS is the whole worker process (runtime library included).", "",
             "| variant | batch | median ms | p90 ms | items/s | speed-up | peak RSS MB | memory ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['variant']} | {r['batch']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['throughput_per_s']:.1f} | "
                     f"{r['speedup']:.2f}x | {r['peak_rss_mb']:.0f} | {r['memory_ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def variants_from_args(artifacts: Sequence[str], torch_model: str | None, provider: str = "cpu", threads: int = 0,
                       pretrained: bool = True) -> list[Variant]:
    """Variants for the CLI: PyTorch eager first (the baseline), then artifacts, labelled by folder name."""
    out: list[Variant] = []
    for a in artifacts:
        p = Path(a)
        folder = p if p.is_dir() else p.parent
        if torch_model and (folder / "manifest.json").is_file():
            made = json.loads((folder / "manifest.json").read_text()).get("model")
            if made and made != torch_model:
                raise BenchError(f"artifact {p} was made from '{made}', not the PyTorch baseline '{torch_model}'",
                                 f"pass --torch {made}, or compare artifacts of {torch_model}", code="EF957")
    if torch_model:
        out.append(Variant(f"torch:{torch_model}", "torch", model=torch_model, threads=threads, pretrained=pretrained))
    for a in artifacts:
        p = Path(a)
        if not p.exists():
            raise BenchError(f"artifact {p} not found", "run `edgefuse export` / `quantize` / `build` first", code="EF956")
        label = p.name if p.is_dir() else f"{p.parent.name}/{p.name}"
        out.append(Variant(label, "artifact", path=str(p), provider=provider, threads=threads))
    return out
