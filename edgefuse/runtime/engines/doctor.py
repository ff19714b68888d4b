"""`edgefuse doctor`: prove a target works on the device in front of you.

A list of checks, each a result (pass / fail / skip with the reason), never a crash:
the TensorRT flavour is installed at the right version, a GPU is present and its compute
capability is one the target builds for, the engine builds (or an existing engine's manifest
matches this machine), it activates, and its outputs agree with the ONNX artifact it was
built from (ONNX Runtime on the CPU) on a small evaluation subset: museum test images with
their questions when the artifact has a tokenizer, else random inputs inside the profile.
The report is saved as JSON and Markdown.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefuse.artifacts import atomic_write_json, atomic_write_text, read_manifest
from edgefuse.config import EdgeConfig
from edgefuse.errors import EdgeFuseError

log = logging.getLogger(__name__)


@dataclass
class Check:
    name: str
    status: str  # pass | fail | skip
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class DoctorReport:
    target: str
    flavour: str
    machine: dict[str, Any]
    checks: list[Check] = field(default_factory=list)
    engine: str | None = None

    @property
    def ok(self) -> bool:
        parity = [c for c in self.checks if c.name.startswith("parity")]
        return all(c.status != "fail" for c in self.checks) and bool(parity) and all(c.status == "pass" for c in parity)

    def add(self, name: str, status: str, detail: str, **data: Any) -> Check:
        c = Check(name, status, detail, data)
        self.checks.append(c)
        log.info("doctor %s: %s - %s", name, status, detail)
        return c

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "flavour": self.flavour, "machine": self.machine, "engine": self.engine, "ok": self.ok,
                "checks": [asdict(c) for c in self.checks]}

    def markdown(self) -> str:
        lines = [f"# edgefuse doctor: target `{self.target}` ({self.flavour})", "",
                 f"Result: **{'PASS' if self.ok else 'FAIL'}**", "",
                 f"Machine: {self.machine.get('platform')}, GPU compute capability {self.machine.get('compute_capability') or 'none'}", "",
                 "| check | status | detail |", "|---|---|---|"]
        lines += [f"| {c.name} | {c.status} | {c.detail.replace('|', '/')} |" for c in self.checks]
        return "\n".join(lines) + "\n"


def _machine() -> dict[str, Any]:
    from edgefuse.runtime.engines import cuda

    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(), "gpus": cuda.device_count(),
                            "cuda_runtime": cuda.runtime_version(), "compute_capability": None}
    if info["gpus"]:
        try:
            info["compute_capability"] = cuda.compute_capability()
        except EdgeFuseError as e:
            info["compute_capability_error"] = e.message
    return info


def eval_feeds(artifact_folder: Path, manifest: dict[str, Any], n: int, profile: dict[str, dict[str, list[int]]],
               inputs: list[dict[str, Any]] | None = None) -> tuple[str, list[dict[str, np.ndarray]]]:
    """(source description, feeds of batch 1): museum test items if the model takes image + question and the
    artifact has a tokenizer, else random inputs inside the profile. `inputs` overrides the manifest's input specs."""
    inputs = list(inputs if inputs is not None else manifest.get("inputs", []))
    names = [s["name"] for s in inputs]
    tok = artifact_folder / "tokenizer.json"
    if tok.is_file() and set(names) == {"pixel_values", "input_ids", "attention_mask"}:
        from edgefuse.data.museum import generate
        from edgefuse.data.preprocess import PreprocessConfig, Preprocessor
        from edgefuse.data.tokenizer import Tokenizer

        max_text = int(manifest.get("max_text_length") or 32)
        if "input_ids" in profile:
            max_text = min(max_text, profile["input_ids"]["max"][1])
        cfg = PreprocessConfig(image_size=int(manifest.get("image_size") or 64), max_text_length=max_text)
        pre = Preprocessor(cfg, Tokenizer.load(tok))
        feeds = []
        for item in generate("test", n=n):
            text = item.questions[0].question if item.questions else (item.captions[0] if item.captions else "")
            feed = pre([item.image], [text])
            lo = profile.get("input_ids", {}).get("min", [1, 1])[1]
            if feed["input_ids"].shape[1] < lo:  # pad short questions up to the profile's minimum length
                feed = pre([item.image], [text], pad_to=lo)
            feeds.append(feed)
        return f"museum test split, first {n} items", feeds
    rng = np.random.default_rng(0)
    feeds = []
    specs = {s["name"]: s for s in inputs}
    for i in range(n):
        feed = {}
        for name, shapes in profile.items():
            shape = [lo if lo == hi else int(rng.integers(lo, hi + 1)) if j > 0 else 1
                     for j, (lo, hi) in enumerate(zip(shapes["min"], shapes["max"], strict=True))]
            if names and name in specs and specs[name]["shape"] and specs[name]["shape"][0] == "batch":
                shape[0] = 1
            feed[name] = shape
        # axes shared between inputs (text_length) must agree: reuse the first input's sizes by axis name
        sizes: dict[str, int] = {}
        out = {}
        for name, shape in feed.items():
            axes = specs.get(name, {}).get("shape", [])
            for j, a in enumerate(axes):
                if isinstance(a, str):
                    shape[j] = sizes.setdefault(a, shape[j])
            dtype = np.dtype(specs.get(name, {}).get("dtype", "float32"))
            if dtype.kind == "f":
                out[name] = rng.uniform(-1, 1, shape).astype(dtype)
            elif name == "attention_mask":
                out[name] = np.ones(shape, dtype)
            else:
                out[name] = rng.integers(0, 16, shape).astype(dtype)
        feeds.append(out)
    return f"{n} random inputs inside the engine profile (the artifact has no tokenizer)", feeds


def run_doctor(
    target_name: str,
    config: EdgeConfig,
    artifact: str | Path | None = None,
    engine: str | Path | None = None,
    n: int = 8,
    report_dir: str | Path = "doctor-report",
    timing_cache: str | Path | None = None,
    cosine_min: float = 0.99,
) -> tuple[DoctorReport, Path]:
    """Run the checks; returns the report and the folder it was written to."""
    from edgefuse.runtime.engines.flavours import get_flavour, import_trt, library_version

    target = config.target(target_name)
    flavour = get_flavour(target.flavour)
    report = DoctorReport(target_name, flavour.name, _machine())
    report_dir = Path(report_dir)
    trt = None
    try:
        trt = import_trt(flavour)
        report.add("library", "pass", f"{flavour.module} {library_version(trt)}", version=library_version(trt))
    except EdgeFuseError as e:
        report.add("library", "fail", e.line())
    cc = report.machine.get("compute_capability")
    if not report.machine["gpus"]:
        report.add("gpu", "fail", "no CUDA GPU on this machine: engines cannot run here (building may still work)")
    elif target.compute_capability and cc not in target.compute_capability:
        report.add("gpu", "fail", f"this GPU is compute capability {cc}; target {target_name} builds for "
                   f"{', '.join(target.compute_capability)}", compute_capability=cc)
    else:
        report.add("gpu", "pass", f"compute capability {cc}", compute_capability=cc)

    engine_dir: Path | None = Path(engine) if engine else None
    if engine_dir is None and artifact is not None and trt is not None:
        from edgefuse.runtime.engines.build import build_engines

        t0 = time.perf_counter()
        try:
            res = build_engines(artifact, target_name, config, out=report_dir / "engine", timing_cache=timing_cache, overwrite=True)
            engine_dir = res.folder
            report.add("build", "pass", f"{len(res.manifest['engines'])} engine(s) in {time.perf_counter() - t0:.1f} s",
                       engines=[e["file"] for e in res.manifest["engines"]], warnings=res.warnings[:20])
        except EdgeFuseError as e:
            report.add("build", "fail", e.line())
    elif engine_dir is None:
        report.add("build", "skip", "no artifact or engine given" if trt is not None else "library missing")
    report.engine = str(engine_dir) if engine_dir else None

    if engine_dir is None:
        report.add("activate", "skip", "no engine")
        report.add("parity", "skip", "no active engine to compare")
    else:
        _activate_and_compare(report, engine_dir, artifact, n, cosine_min)
    report_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(report_dir / "doctor.json", report.to_dict())
    atomic_write_text(report_dir / "doctor.md", report.markdown())
    return report, report_dir


def _activate_and_compare(report: DoctorReport, engine_dir: Path, artifact: str | Path | None, n: int, cosine_min: float) -> None:
    """Activate each runnable unit of the engine folder and compare it with its ONNX source."""
    from edgefuse.runtime.engines.manifest import read_engine_manifest
    from edgefuse.runtime.engines.runner import EngineRunner

    try:
        folder, manifest = read_engine_manifest(engine_dir)
    except EdgeFuseError as e:
        report.add("activate", "fail", e.line())
        report.add("parity", "skip", "no readable engine manifest")
        return
    engines = manifest["engines"]
    units: list[tuple[Path, str | None]] = [(folder, None)] if manifest.get("split") or len(engines) == 1 else \
        [(folder / e["file"], str(e["source"])) for e in engines]
    for path, onnx_file in units:
        suffix = f" ({path.name})" if onnx_file else ""
        runner = EngineRunner(path)
        try:
            runner.activate()
            report.add("activate" + suffix, "pass", f"{runner.name} deserialized on this GPU")
        except EdgeFuseError as e:
            report.add("activate" + suffix, "fail", e.line())
            report.add("parity" + suffix, "skip", "no active engine to compare")
            continue
        try:
            _parity(report, runner, artifact, onnx_file, n, cosine_min, suffix)
        finally:
            runner.deactivate()


def _parity(report: DoctorReport, runner: Any, artifact: str | Path | None, onnx_file: str | None, n: int, cosine_min: float,
            suffix: str = "") -> None:
    """Engine vs the ONNX artifact on ONNX Runtime CPU: tensor metrics per output, top-1 agreement."""
    from edgefuse.parity.metrics import tensor_metrics
    from edgefuse.runtime.runners import open_runner

    source = Path(artifact) if artifact else Path(runner.manifest["source"]["artifact"])
    if not source.exists():
        report.add("parity" + suffix, "skip", f"source artifact {source} not found; pass ARTIFACT to compare")
        return
    folder = source if source.is_dir() else source.parent
    manifest = read_manifest(folder)
    what, feeds = eval_feeds(folder, manifest, n, runner.profile_shapes, runner.inputs)
    refs: dict[str, list[np.ndarray]] = {}
    outs: dict[str, list[np.ndarray]] = {}
    with open_runner(folder if onnx_file else source, provider="cpu", file=onnx_file) as ref:
        for feed in feeds:
            r = ref.infer(feed)
            o = runner.infer(feed)
            for k in runner.output_names:
                refs.setdefault(k, []).append(r[k])
                outs.setdefault(k, []).append(o[k])
    metrics = {}
    worst = 1.0
    for k in refs:
        a, b = np.concatenate(refs[k]), np.concatenate(outs[k])
        m = tensor_metrics(a, b)
        if a.ndim == 2 and a.shape[1] > 1 and k.endswith("logits"):
            m["top1_agreement"] = float(np.mean(a.argmax(1) == b.argmax(1)))
        metrics[k] = m
        worst = min(worst, m["cosine"])
    status = "pass" if worst >= cosine_min else "fail"
    report.add("parity" + suffix, status, f"{what}: worst output cosine {worst:.5f} (needs >= {cosine_min})", metrics=metrics)
