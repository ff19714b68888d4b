"""Validation: the FP32 PyTorch model (the reference) and every artifact on one evaluation set.

Both sides see byte-identical feeds (one preprocessing, one tokenizer, one batching), so every
difference in the outputs is the artifact's. Bad input is refused before any model runs: an
unknown gate metric, a missing artifact, one made from another model or other weights, an
evaluation set with nothing the model's tasks can use.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


from edgefuse.artifacts import MANIFEST_NAME, read_manifest, sha256_file, tool_versions
from edgefuse.config import EdgeConfig, GateConfig, load_config
from edgefuse.errors import ArtifactError, ValidationError, suggest
from edgefuse.parity.evalset import MUSEUM, EvalSet, build_eval_set
from edgefuse.parity.gates import check_gates, evaluate_gates
from edgefuse.parity.metrics import error_histogram
from edgefuse.parity.predict import DEFAULT_BATCH, Feeds, build_feeds, collect, runner_captioner, torch_captioner, torch_predictor
from edgefuse.parity.reports import ArtifactReport, GroundingSample, ValidationReport, write_reports
from edgefuse.parity.scoring import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, EvalLabels, TaskOutputs, reference_scores, score

log = logging.getLogger(__name__)

SAMPLES_SHOWN = 4  # grounding samples drawn in the HTML report
QDQ_MODES = ("kernels", "simulated")
DISAGREEMENTS_SHOWN = 10  # VQA items answered differently from FP32, listed per artifact


# ----------------------------------------------------------------------------- artifacts


@dataclass
class ArtifactInfo:
    path: Path
    name: str
    manifest: dict[str, Any]

    @property
    def precision(self) -> str:
        return str(self.manifest.get("precision", "?"))


def _weights_sha(manifest: dict[str, Any]) -> str | None:
    m: Any = manifest
    while isinstance(m, dict):
        if m.get("weights_sha256"):
            return str(m["weights_sha256"])
        m = m.get("parent")
    return None


def open_artifact(path: str | Path) -> ArtifactInfo:
    """Find an artifact and its manifest, and check its model files still match the manifest."""
    p = Path(path)
    if not p.exists():
        parent = p.parent if str(p.parent) else Path(".")
        found = sorted(x.name for x in parent.iterdir() if (x / MANIFEST_NAME).is_file()) if parent.is_dir() else []
        raise ValidationError(f"artifact {p} not found",
                              f"artifacts found in {parent}: {', '.join(found)}" if found else f"no artifact folders in {parent}; run `edgefuse export` first",
                              code="EF908")
    folder = p.parent if p.is_file() else p
    if not (folder / MANIFEST_NAME).is_file():
        present = sorted(x.name for x in folder.iterdir())[:10] if folder.is_dir() else []
        raise ValidationError(f"{folder} has no {MANIFEST_NAME}, so it is not an edgefuse artifact",
                              f"found: {', '.join(present) or 'nothing'}; pass a folder written by `edgefuse export` or `edgefuse quantize`",
                              code="EF908")
    try:
        manifest = read_manifest(folder)
    except ArtifactError as e:
        raise ValidationError(f"artifact {folder}: {e.message}", e.hint, code="EF908") from e
    for fname, expected in (manifest.get("files") or {}).items():
        f = folder / fname
        if f.suffix in (".onnx", ".engine", ".plan", ".trt") and f.is_file() and expected and sha256_file(f) != expected:
            raise ValidationError(f"artifact {folder}: {fname} does not match the sha256 in its manifest (changed after it was written)",
                                  "re-run the stage that wrote it; validating a modified file proves nothing about the build",
                                  code="EF916")
    name = folder.name if p.is_dir() else f"{folder.name}/{p.name}"
    return ArtifactInfo(p, name, manifest)


def check_origin(info: ArtifactInfo, model: str, weights_sha: str) -> None:
    """The artifact must come from the reference model and weights, or the comparison means nothing."""
    folder = info.path if info.path.is_dir() else info.path.parent
    made_from = info.manifest.get("model")
    if made_from != model:
        raise ValidationError(f"artifact {folder} was made from model '{made_from}', the reference is '{model}'",
                              f"pass --model {made_from}, or validate artifacts of {model}", code="EF909")
    sha = _weights_sha(info.manifest)
    if sha is None:
        raise ValidationError(f"artifact {folder} does not record the weights it was made from (no weights_sha256)",
                              "re-export it with `edgefuse export`", code="EF910")
    if sha != weights_sha:
        raise ValidationError(f"artifact {folder} was made from weights sha256 {sha[:12]}…, the reference weights are {weights_sha[:12]}…",
                              "re-export from the weights you validate against, or pass --weights with the file it was made from",
                              code="EF910")


def _unique_names(infos: list[ArtifactInfo]) -> None:
    seen: dict[str, int] = {}
    for a in infos:
        if a.name in seen:
            seen[a.name] += 1
            a.name = f"{a.name}#{seen[a.name]}"
        else:
            seen[a.name] = 1


def _sensitivity(info: ArtifactInfo) -> tuple[list[tuple[str, float]] | None, str | None]:
    """Per-layer SQNR from the quantize stage's JSON beside the artifact, if present."""
    folder = info.path if info.path.is_dir() else info.path.parent
    for f in sorted(folder.glob("*sensitivity*.json")):
        try:
            data = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("cannot read %s", f)
            continue
        rows = data.get("groups") or data.get("layers") or data.get("entries") or data.get("sensitivity") if isinstance(data, dict) else data
        if isinstance(rows, dict):
            rows = [{"name": k, **(v if isinstance(v, dict) else {"sqnr_db": v})} for k, v in rows.items()]
        out = []
        for r in rows or []:
            if not isinstance(r, dict):
                continue
            name = r.get("name") or r.get("group") or r.get("node") or r.get("tensor")
            v = next((r[k] for k in ("sqnr_db", "sqnr", "SQNR") if isinstance(r.get(k), (int, float))), None)
            if name is not None and v is not None and math.isfinite(float(v)):
                out.append((str(name), float(v)))
        if out:
            return out, f.name
    return None, None


# --------------------------------------------------------------------------------- the run


@dataclass
class Reference:
    """The FP32 PyTorch model with everything validation needs from its zoo entry."""

    name: str
    weights: str  # file path, or "random-init:seed0"
    weights_sha: str
    tasks: list[str]
    answers: list[str]
    tokenizer: Any
    image_size: int
    max_text_length: int
    model: Any


def load_reference(model: str, weights: str | Path | None) -> Reference:
    """The reference model: `weights`, else the shipped weights, else the seeded random init
    (what `edgefuse export` uses when no weights are shipped; its hash is of the state dict)."""
    from edgefuse.models.zoo import get_entry, load_model

    entry = get_entry(model)
    wpath = Path(weights) if weights is not None else entry.weights_file
    if weights is not None and not wpath.is_file():
        raise ValidationError(f"reference weights {wpath} not found", "pass the .safetensors file the artifacts were made from",
                              code="EF911")
    if wpath.is_file():
        module = load_model(model, weights=wpath)
        sha, label, folder = sha256_file(wpath), str(wpath), wpath.parent
    else:
        from edgefuse.export.exporter import state_sha256

        log.warning("no shipped weights for %s: the reference is the seeded random init", model)
        module = load_model(model, pretrained=False)
        sha, label, folder = state_sha256(module), "random-init:seed0", None
    from edgefuse.data.tokenizer import Tokenizer, default_tokenizer

    tok_file = folder / "tokenizer.json" if folder is not None else None
    tokenizer = Tokenizer.load(tok_file) if tok_file is not None and tok_file.is_file() else default_tokenizer()
    if folder is not None and (folder / "answers.json").is_file():
        answers = [str(a) for a in json.loads((folder / "answers.json").read_text())]
    else:
        from edgefuse.data.museum import answer_vocabulary

        answers = answer_vocabulary()
    return Reference(model, label, sha, list(entry.tasks), answers, tokenizer, entry.image_size, entry.max_text_length, module)


def _vocabulary(tok: Any) -> tuple[Any, ...]:
    """What decides the ids a text gets: the token of every id and the special ids (compared
    as data, so a re-saved or pretty-printed tokenizer.json still matches)."""
    return (tok.vocab_size, tok.pad_id, tok.cls_id, tok.sep_id, tok.unk_id, tok.mask_id,
            tuple(tok.id_to_token(i) for i in range(tok.vocab_size)))


def _check_artifact_text(info: ArtifactInfo, ref: Reference) -> None:
    """The artifact's tokenizer and answer list must be the reference's, or answers would not line up."""
    folder = info.path if info.path.is_dir() else info.path.parent
    tok = folder / "tokenizer.json"
    if tok.is_file():
        from edgefuse.data.tokenizer import Tokenizer

        if _vocabulary(Tokenizer.load(tok)) != _vocabulary(ref.tokenizer):
            raise ValidationError(f"artifact {info.name}: tokenizer.json differs from the reference model's",
                                  "re-export the artifact from the same weights folder", code="EF912")
    ans = folder / "answers.json"
    if ans.is_file() and [str(a) for a in json.loads(ans.read_text())] != ref.answers:
        raise ValidationError(f"artifact {info.name}: answers.json differs from the reference model's answer vocabulary",
                              "re-export the artifact from the same weights folder", code="EF912")


def _fixed_dim(info: ArtifactInfo, input_name: str, axis: int) -> int | None:
    for spec in info.manifest.get("inputs") or []:
        if spec.get("name") == input_name and len(spec.get("shape", [])) > axis and isinstance(spec["shape"][axis], int):
            return int(spec["shape"][axis])
    return None


def validate(artifacts: Sequence[str | Path], model: str | None = None, weights: str | Path | None = None,
             eval_set: str | Path = MUSEUM, n: int | None = None, gates: Sequence[GateConfig] | None = None,
             config: EdgeConfig | str | Path | None = None, report_dir: str | Path | None = None, provider: str = "cpu",
             batch_size: int = DEFAULT_BATCH, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
             confidence: float = DEFAULT_CONFIDENCE, threads: int = 1, qdq: str = "kernels", command: str = "",
             progress: Callable[[str], None] | None = None) -> ValidationReport:
    """Validate artifacts against the FP32 PyTorch model; write reports if `report_dir` is given.

    The report's `exit_code` is 0 when every gate passed (or did not apply) and 1 when a gate
    failed; anything that stops validation raises ValidationError (or another EdgeFuseError).
    `qdq="simulated"` runs INT8 QDQ artifacts with graph optimisations off, so Q/DQ pairs compute in
    float as TensorRT's INT8 does numerically, independent of this CPU's integer kernels (which
    saturate on AVX2 without VNNI, see NOTES.md); "kernels" checks what this CPU really runs.
    """
    t0 = time.perf_counter()
    say = progress or (lambda msg: log.info(msg))
    cfg = config if isinstance(config, EdgeConfig) else load_config(config)
    gate_list = list(cfg.gates if gates is None else gates)
    check_gates(gate_list)
    if not artifacts:
        raise ValidationError("no artifact given", "pass one or more artifact folders (e.g. artifacts/museum-dual-int8)", code="EF908")
    if resamples < 10:
        raise ValidationError(f"resamples {resamples} is too few for an interval", "use 1000", code="EF914")
    if batch_size < 1:
        raise ValidationError(f"batch size {batch_size} must be >= 1", "use e.g. 32", code="EF914")
    if qdq not in QDQ_MODES:
        raise ValidationError(f"unknown QDQ mode '{qdq}'", suggest(qdq, QDQ_MODES), code="EF914")

    infos = [open_artifact(a) for a in artifacts]  # cheap checks first: before PyTorch loads anything
    _unique_names(infos)
    if model is None:  # the model the artifacts were made from, else the config's
        model = str(infos[0].manifest.get("model") or cfg.model.name)
    from edgefuse.models.zoo import list_models

    if model not in list_models():
        raise ValidationError(f"unknown reference model '{model}'", suggest(model, list_models()), code="EF915")
    if weights is None and model == cfg.model.name:
        weights = cfg.model.weights
    ref = load_reference(model, weights)
    for info in infos:
        check_origin(info, ref.name, ref.weights_sha)
        _check_artifact_text(info, ref)

    ev = build_eval_set(eval_set, n, ref.tasks, ref.answers)
    labels = ev.labels()
    pad_to = next((d for d in (_fixed_dim(i, "input_ids", 1) for i in infos) if d), None)
    fixed_batches = [d for d in (_fixed_dim(i, "pixel_values", 0) for i in infos) if d]
    if fixed_batches:
        batch_size = min(fixed_batches)
        if any(b != batch_size for b in fixed_batches):
            raise ValidationError("artifacts have different fixed batch sizes", f"found {sorted(set(fixed_batches))}", code="EF914")
    feeds = build_feeds(ev, ref.tokenizer, ref.image_size, ref.max_text_length, batch_size, pad_to, fixed_batch=bool(fixed_batches))

    say(f"reference: {ref.name} FP32 PyTorch on {ev.source}")
    import torch

    torch_threads = torch.get_num_threads()
    if threads:  # one thread each by default: eager PyTorch slows 10x when its threads compete for busy cores
        torch.set_num_threads(threads)
    try:
        opts = RunOptions(provider, threads, resamples, seed, confidence, qdq)
        return _run(ref, infos, ev, labels, feeds, gate_list, opts, say, command, report_dir, t0)
    finally:
        torch.set_num_threads(torch_threads)


@dataclass(frozen=True)
class RunOptions:
    provider: str
    threads: int
    resamples: int
    seed: int
    confidence: float
    qdq: str

    def runner_options(self, info: ArtifactInfo) -> dict[str, Any]:
        opts: dict[str, Any] = {"threads": self.threads} if self.threads and self.provider == "cpu" else {}
        if self.qdq == "simulated" and info.precision == "int8" and self.provider == "cpu":
            opts["optimization"] = "disable"
        return opts

    def describe(self, info: ArtifactInfo) -> str:
        simulated = self.qdq == "simulated" and info.precision == "int8" and self.provider == "cpu"
        return f"{self.provider} (simulated QDQ)" if simulated else self.provider


def _run(ref: Reference, infos: list[ArtifactInfo], ev: EvalSet, labels: EvalLabels, feeds: Feeds, gate_list: list[GateConfig],
         o: RunOptions, say: Callable[[str], None], command: str, report_dir: str | Path | None, t0: float) -> ValidationReport:
    provider, threads, resamples, seed, confidence = o.provider, o.threads, o.resamples, o.seed, o.confidence
    tr = time.perf_counter()
    captioning = "captioning" in ref.tasks
    ref_out = collect(torch_predictor(ref.model), feeds, ev,
                      torch_captioner(ref.model, ref.tokenizer) if captioning else None)
    reference_seconds = time.perf_counter() - tr
    log.info("reference ran in %.1f s", reference_seconds)

    samples = _samples(ev, ref_out)
    reports: list[ArtifactReport] = []
    for info in infos:
        say(f"artifact: {info.name} ({info.precision}) on {o.describe(info)}")
        ta = time.perf_counter()
        from edgefuse.runtime.runners import open_runner

        opened: list[Any] = []
        try:
            if captioning:
                folder = info.path if info.path.is_dir() else info.path.parent
                cap, opened = runner_captioner(folder, info.manifest, provider, ref.tokenizer)
                art_out = collect(lambda feed: {}, feeds, ev, cap)
            else:
                runner = open_runner(info.path, provider=provider, **o.runner_options(info)).activate()
                opened.append(runner)
                names = set(runner.output_names)
                art_out = collect(lambda feed: {k: v for k, v in runner.infer(feed).items() if k in names}, feeds, ev)
        finally:
            for r in opened:
                r.deactivate()
        res = score(labels, ref_out, art_out, resamples=resamples, seed=seed, confidence=confidence)
        outs = sorted(set(ref_out.tensors) & set(art_out.tensors))
        sample_idx = [k for k, _ in samples]
        reports.append(ArtifactReport(
            name=info.name, path=str(info.path), precision=info.precision, provider=o.describe(info),
            manifest={k: info.manifest.get(k) for k in ("model", "family", "tasks", "precision", "opset", "weights_sha256", "created_by",
                                                         "tool_versions") if k in info.manifest},
            metrics=res, gates=evaluate_gates(gate_list, info.name, res, ref.tasks, outs),
            histograms={o: error_histogram(ref_out.tensors[o], art_out.tensors[o]) for o in outs},
            sample_boxes=[list(map(float, art_out.tensors["box"][k])) for k in sample_idx] if "box" in art_out.tensors else [],
            sample_attention=[art_out.tensors["grounding_attention"][k] for k in sample_idx] if "grounding_attention" in art_out.tensors else [],
            seconds=time.perf_counter() - ta,
        ))
        reports[-1].sensitivity, reports[-1].sensitivity_source = _sensitivity(info)
        reports[-1].disagreements = _disagreements(ev, ref, ref_out, art_out)

    report = ValidationReport(
        model={"name": ref.name, "weights": ref.weights, "weights_sha256": ref.weights_sha, "tasks": ref.tasks},
        eval_set={"source": ev.source, "images": len(ev.items), "items": ev.counts(),
                  "vqa_answers_outside_vocabulary": ev.vqa_out_of_vocabulary},
        reference=reference_scores(labels, ref_out), artifacts=reports, gates=gate_list,
        bootstrap={"resamples": resamples, "seed": seed, "confidence": confidence, "method": "paired percentile bootstrap over items"},
        reference_seconds=reference_seconds, threads=threads,
        samples=[s for _, s in samples],
        created=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        tool_versions=tool_versions("torch", "onnx", "onnxruntime", "numpy"), command=command,
    )
    report.seconds = time.perf_counter() - t0
    if report_dir is not None:
        write_reports(report, report_dir)
    return report


def _disagreements(ev: EvalSet, ref: Reference, ref_out: TaskOutputs, art_out: TaskOutputs, limit: int = DISAGREEMENTS_SHOWN,
                   ) -> list[dict[str, Any]]:
    """The first VQA items where the artifact's answer differs from FP32's (where to look first)."""
    if "vqa_logits" not in ref_out.tensors or "vqa_logits" not in art_out.tensors:
        return []
    rp, ap = ref_out.tensors["vqa_logits"].argmax(1), art_out.tensors["vqa_logits"].argmax(1)
    name = (lambda k: ref.answers[k] if 0 <= k < len(ref.answers) else "?")
    out = []
    for k in [int(i) for i in np.flatnonzero(rp != ap)[:limit]]:
        img, question, label = ev.vqa[k]
        out.append({"image_id": ev.items[img].image_id, "question": question, "label": name(label) if label >= 0 else "(not in vocabulary)",
                    "reference": name(int(rp[k])), "artifact": name(int(ap[k]))})
    return out


def _samples(ev: EvalSet, ref: TaskOutputs) -> list[tuple[int, GroundingSample]]:
    """The first grounding phrase of the first few images, with the reference's box and attention."""
    if "box" not in ref.tensors:
        return []
    out, seen = [], set()
    for k, (img, phrase, box) in enumerate(ev.grounding):
        if img in seen:
            continue
        seen.add(img)
        att = ref.tensors.get("grounding_attention")
        out.append((k, GroundingSample(ev.items[img].image, phrase, list(box), list(map(float, ref.tensors["box"][k])),
                                       None if att is None else att[k])))
        if len(out) >= SAMPLES_SHOWN:
            break
    return out
