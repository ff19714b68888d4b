"""`quantize_artifact`: FP32 artifact folder in, FP16/INT8 artifact folder out.

Steps: check the input is an FP32 ONNX artifact; build calibration data with the kiosk's
preprocessing; let the recipe's backend prepare a Plan; measure per-group sensitivity; apply
the accuracy budget if one is set; measure the final drops; write model.onnx, manifest
(precision, parent manifest), tokenizer/answers copies, quantize_report.json and
sensitivity.json into a staged folder that only appears when everything succeeded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from edgefuse.artifacts import (atomic_write_json, read_manifest, sha256_bytes, sha256_file, staged_dir, tool_versions,
                                write_manifest)
from edgefuse.errors import ArtifactError, QuantizeError
from edgefuse.quantize.configs import QuantConfig, config_to_dict
from edgefuse.quantize.graph import strip_debug_metadata

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
REPORT_FILE = "quantize_report.json"
SENSITIVITY_FILE = "sensitivity.json"
COPY_FILES = ("tokenizer.json", "answers.json")


@dataclass
class CalibrationOptions:
    source: str = "museum"
    num_samples: int = 256
    seed: int = 0
    cache_dir: str | None = ".edgefuse-cache"


@dataclass
class QuantizeOptions:
    budget_metric: str | None = None
    max_drop: float | None = None
    eval_samples: int = 200  # labelled museum val samples per task for the metrics (0 = skip)
    sensitivity: bool = True
    sensitivity_samples: int = 16
    threads: int = 1
    budget_optional: bool = False  # budget from edge_config.yaml: skip (warn) if the model lacks the metric
    overwrite: bool = False
    created_by: str = "edgefuse quantize (Python API)"


@dataclass
class QuantizeResult:
    folder: Path
    precision: str
    report: dict[str, Any] = field(default_factory=dict)
    sensitivity: list[dict[str, Any]] = field(default_factory=list)


def default_output(artifact: Path, precision: str) -> Path:
    name = artifact.name
    for suffix in ("-fp32", "_fp32", ".fp32"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return artifact.with_name(f"{name}-{precision}")


CAPTION_FILES = ("image_encoder.onnx", "decoder.onnx")


def load_fp32_artifact(artifact: str | os.PathLike[str]) -> tuple[Path, dict[str, Any], dict[str, tuple[onnx.ModelProto, str]]]:
    """(folder, manifest, {file: (model, sha256)}); typed errors for anything not an FP32 ONNX artifact."""
    folder = Path(artifact)
    if not folder.is_dir():
        raise QuantizeError(f"artifact folder {folder} not found", "pass a folder written by `edgefuse export`", code="EF511")
    manifest = read_manifest(folder)
    precision = manifest.get("precision")
    if precision != "fp32":
        raise QuantizeError(f"{folder} holds a {precision} artifact, not fp32",
                            "quantize the FP32 export (quantizing twice compounds the error)", code="EF512")
    if (folder / MODEL_FILE).is_file():
        files: tuple[str, ...] = (MODEL_FILE,)
    elif all((folder / f).is_file() for f in CAPTION_FILES):
        files = CAPTION_FILES
        if not isinstance(manifest.get("generation"), dict):
            raise QuantizeError(f"{folder} has no generation settings in its manifest", "re-run `edgefuse export`", code="EF516")
    else:
        found = sorted(p.name for p in folder.glob("*.onnx"))
        raise QuantizeError(f"{folder} has no {MODEL_FILE} (found: {', '.join(found) or 'none'})",
                            "point at a folder written by `edgefuse export`", code="EF515")
    graphs: dict[str, tuple[onnx.ModelProto, str]] = {}
    for f in files:
        path = folder / f
        try:
            model = onnx.load(str(path))
        except Exception as e:
            raise QuantizeError(f"cannot read {path}: {str(e).splitlines()[0][:160]}", "re-run `edgefuse export`", code="EF516") from e
        if any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer) or \
                any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
            raise QuantizeError(f"{path} is already reduced precision (manifest says fp32)", "quantize the FP32 export", code="EF512")
        graphs[f] = (model, (manifest.get("files") or {}).get(f) or sha256_file(path))
    return folder, manifest, graphs


def _graph_calibration(calib: Any, name: str, feeds: list[dict[str, Any]]) -> Any:
    """A CalibrationSet for one graph of a multi-graph artifact (its own feeds, its own key)."""
    import dataclasses
    import hashlib

    h = hashlib.sha256(f"{calib.data_hash}:{name}:{len(feeds)}".encode()).hexdigest()
    return dataclasses.replace(calib, feeds=feeds, data_hash=h)


def quantize_artifact(artifact: str | os.PathLike[str], config: QuantConfig, out: str | os.PathLike[str] | None = None,
                      calibration: CalibrationOptions | None = None, options: QuantizeOptions | None = None,
                      progress: Callable[[str], None] | None = None) -> QuantizeResult:
    """Quantize an FP32 artifact folder with `config`; returns the new folder and its report."""
    from edgefuse.calibration import StatsCache, build_calibration
    from edgefuse.calibration.dataset import check_input_names
    from edgefuse.data.preprocess import PreprocessConfig, Preprocessor
    from edgefuse.data.tokenizer import Tokenizer
    from edgefuse.quantize import budget as budget_mod
    from edgefuse.quantize import evaluate as ev
    from edgefuse.quantize.backends import Context
    from edgefuse.quantize.registry import backend_for
    from edgefuse.quantize.sensitivity import group_sensitivity, model_sqnr

    cal = calibration or CalibrationOptions()
    opt = options or QuantizeOptions()
    say = progress or (lambda msg: log.info(msg))
    if (opt.budget_metric is None) != (opt.max_drop is None):
        raise QuantizeError("the accuracy budget needs both a metric and a max drop", "pass --budget-metric M --max-drop X",
                            code="EF541")
    folder, manifest, graphs = load_fp32_artifact(artifact)
    caption = MODEL_FILE not in graphs
    out_dir = Path(out) if out is not None else default_output(folder, config.precision)
    if out_dir.exists() and not opt.overwrite:
        raise ArtifactError(f"output {out_dir} already exists", "pass --overwrite to replace it", code="EF601")
    if out_dir.resolve() == folder.resolve():
        raise QuantizeError("output folder is the input artifact", "pass a different --out", code="EF517")
    tok_path = folder / "tokenizer.json"
    if not tok_path.is_file():
        raise QuantizeError(f"{folder} has no tokenizer.json", "re-run `edgefuse export`", code="EF518")
    tokenizer = Tokenizer.load(tok_path)
    if isinstance(manifest.get("preprocess"), dict):
        pcfg = PreprocessConfig.from_dict(manifest["preprocess"])
    else:
        pcfg = PreprocessConfig(image_size=int(manifest.get("image_size", 64)), max_text_length=int(manifest.get("max_text_length", 32)))

    say(f"calibration: {cal.num_samples} pairs from {cal.source}")
    if caption:
        from edgefuse.export.generation import GenerationConfig
        from edgefuse.quantize import caption as cap

        enc, dec = graphs[CAPTION_FILES[0]][0], graphs[CAPTION_FILES[1]][0]
        check_input_names(["pixel_values"], [i.name for i in enc.graph.input])
        gen = GenerationConfig.from_dict(manifest["generation"])
        calib = build_calibration(cal.source, cal.num_samples, cal.seed, pcfg, tokenizer)
        seen: dict[str, Any] = {}
        for p, f in zip(calib.pairs, calib.feeds):
            seen.setdefault(p.key.split("/")[0], f["pixel_values"])
        images = list(seen.values())
        say(f"calibration: recording decoder steps while captioning {len(images)} images")
        per_graph = {CAPTION_FILES[0]: _graph_calibration(calib, CAPTION_FILES[0], [{"pixel_values": v} for v in images]),
                     CAPTION_FILES[1]: _graph_calibration(calib, CAPTION_FILES[1],
                                                          cap.decoder_feeds(enc, dec, gen, images, cal.num_samples, opt.threads))}
    else:
        model0 = graphs[MODEL_FILE][0]
        calib = build_calibration(cal.source, cal.num_samples, cal.seed, pcfg, tokenizer, model_inputs=[i.name for i in model0.graph.input])
        per_graph = {MODEL_FILE: calib}

    cache = StatsCache(cal.cache_dir)
    plans = {}
    for f, (model, sha) in graphs.items():
        plans[f] = backend_for(config)(Context(model, sha, per_graph[f], cache, opt.threads), config)
        say(f"{f} {config.TYPE}: {len(plans[f].default)} of {len(plans[f].groups)} groups lowered by default")

    sensitivity: list[dict[str, Any]] = []
    if opt.sensitivity or opt.budget_metric or getattr(config, "promote_min_sqnr", None) is not None:
        for f, plan in plans.items():
            rows = group_sensitivity(plan, graphs[f][0], per_graph[f].feeds[: max(1, opt.sensitivity_samples)], opt.threads)
            for r in rows:
                r["graph"] = f
            sensitivity += rows
        sensitivity.sort(key=lambda r: (r["sqnr_db"], r["graph"], r["group"]))
        say(f"sensitivity: {len(sensitivity)} groups measured")
    promoted = _promote(plans, sensitivity, getattr(config, "promote_min_sqnr", None))

    finals: dict[str, onnx.ModelProto] = {}
    lowered_by_graph: dict[str, list[str]] = {}
    budget_report = None
    metrics: dict[str, Any] = {}
    if caption:
        if opt.budget_metric is not None and not opt.budget_optional:
            raise QuantizeError(f"budget metric '{opt.budget_metric}' is not measurable for captioning artifacts",
                                "run without --budget-metric; caption drops are reported", code="EF540")
        for f, plan in plans.items():
            lowered_by_graph[f] = list(plan.default)
            finals[f] = (plan.final_build or plan.build)(plan.default)
        if opt.eval_samples > 0:
            from edgefuse.data import museum

            items = museum.generate("val", n=max(4, opt.eval_samples // 4))
            pv = Preprocessor(pcfg, tokenizer)([it.image for it in items], [it.captions[0] for it in items])["pixel_values"]
            refs = [it.captions for it in items]
            mode = plans[CAPTION_FILES[0]].eval_mode
            ref_caps = cap.caption_run(enc, dec, gen, pv, tokenizer, "simulated", opt.threads)
            ref_metrics = cap.caption_metrics(ref_caps, refs)
            metrics = {"reference_fp32": ref_metrics, "eval_samples": {"captioning": len(items)}}
            modes = [mode] + (["cpu"] if mode == "simulated" else [])
            for m in modes:
                got = cap.caption_metrics(cap.caption_run(finals[CAPTION_FILES[0]], finals[CAPTION_FILES[1]], gen, pv, tokenizer, m,
                                                          opt.threads), refs, ref_caps)
                drops = {k: ref_metrics[k] - v for k, v in got.items() if k in ref_metrics}
                drops["caption_agreement"] = 100.0 - got["caption_agreement"]
                metrics["cpu_kernels" if m == "cpu" and mode == "simulated" else m] = {"values": got, "drops": drops}
    else:
        plan, model = plans[MODEL_FILE], graphs[MODEL_FILE][0]
        answers = _answers(folder)
        outputs = [o.name for o in model.graph.output]
        es = ref_run = None
        ref_metrics: dict[str, float] = {}
        if opt.eval_samples > 0 or opt.budget_metric:
            es = ev.build_eval_set(outputs, answers, Preprocessor(pcfg, tokenizer), n=max(opt.eval_samples, 8))
            ref_run = ev.run_tasks(model, es, "simulated", opt.threads)
            ref_metrics = ev.task_metrics(es, ref_run)
        if opt.budget_metric is not None and opt.budget_optional and opt.budget_metric not in ev.metric_drops(ref_metrics, ref_metrics):
            log.warning("budget metric %s is not measurable for this model: budget skipped", opt.budget_metric)
            say(f"budget metric {opt.budget_metric} not measurable for this model: skipped")
            lowered, final = list(plan.default), (plan.final_build or plan.build)(plan.default)
        elif opt.budget_metric is not None and es is not None and ref_run is not None:
            sens = [r for r in sensitivity if r["graph"] == MODEL_FILE]
            lowered, final, budget_report = budget_mod.apply_budget(plan, sens, es, ref_run, ref_metrics, opt.budget_metric,
                                                                    float(opt.max_drop), opt.threads, progress=say)
        else:
            lowered, final = list(plan.default), (plan.final_build or plan.build)(plan.default)
        finals[MODEL_FILE], lowered_by_graph[MODEL_FILE] = final, lowered
        if es is not None and ref_run is not None:
            sim_vals, sim_drops = budget_mod.measure(final, es, ref_run, ref_metrics, plan.eval_mode, opt.threads)
            metrics = {"reference_fp32": ref_metrics, plan.eval_mode: {"values": sim_vals, "drops": sim_drops}, "eval_samples": es.sizes}
            if plan.eval_mode == "simulated":
                cpu_vals, cpu_drops = budget_mod.measure(final, es, ref_run, ref_metrics, "cpu", opt.threads)
                metrics["cpu_kernels"] = {"values": cpu_vals, "drops": cpu_drops}

    multi = len(graphs) > 1
    prefix = (lambda f, g: f"{f}:{g}") if multi else (lambda f, g: g)
    kept_rows: list[dict[str, Any]] = []
    lowered_names: list[str] = []
    kept_names: list[str] = []
    total = 0
    sqnr: dict[str, Any] = {}
    datas: dict[str, bytes] = {}
    for f, plan in plans.items():
        model = graphs[f][0]
        lowered = lowered_by_graph[f]
        kept = dict(plan.kept)
        for g in plan.groups:
            if g not in lowered and g in plan.default:
                for n in plan.groups[g]:
                    kept[n] = [f"reverted by the accuracy budget ({opt.budget_metric} <= {opt.max_drop} pt)"]
        kept_rows += [{"node": prefix(f, n), "op": _op(model, n), "reasons": r} for n, r in sorted(kept.items())]
        lowered_names += [prefix(f, g) for g in sorted(lowered)]
        kept_names += [prefix(f, g) for g in sorted(plan.groups) if g not in lowered]
        total += len(plan.groups)
        feeds = per_graph[f].feeds[: max(1, opt.sensitivity_samples)]
        s = model_sqnr(model, finals[f], feeds, plan.eval_mode, opt.threads)
        if multi:
            sqnr.update({f"{f}:{k}": v for k, v in s.items()})
        else:
            sqnr = s
        strip_debug_metadata(finals[f])
        datas[f] = finals[f].SerializeToString()

    report = {
        "precision": config.precision,
        "recipe": config_to_dict(config),
        "parent": {"folder": str(folder), "model_sha256": {f: sha for f, (_, sha) in graphs.items()} if multi else graphs[MODEL_FILE][1]},
        "calibration": {**calib.identity(), "requested": cal.num_samples, "coverage": calib.coverage,
                        **({"feeds_per_graph": {f: len(c.feeds) for f, c in per_graph.items()}} if multi else {})},
        "groups": {"total": total, "lowered": lowered_names, "kept": kept_names},
        "promoted": promoted,
        "lowered_nodes": sum(len(plans[f].nodes_of(lowered_by_graph[f])) for f in plans),
        "kept_in_higher_precision": kept_rows,
        "output_sqnr_db": sqnr,
        "metrics": metrics,
        "budget": budget_report,
        "details": plans[next(iter(plans))].details if not multi else {f: p.details for f, p in plans.items()},
        "size_bytes": {"fp32": sum(p.stat().st_size for f in graphs for p in folder.glob(f + "*")),
                       "quantized": sum(len(d) for d in datas.values())},
    }
    new_manifest = _manifest(manifest, config.precision, datas, report, opt.created_by)
    with staged_dir(out_dir, overwrite=opt.overwrite) as tmp:
        for f, data in datas.items():
            (tmp / f).write_bytes(data)
        for name in COPY_FILES:
            if (folder / name).is_file():
                shutil.copyfile(folder / name, tmp / name)
        atomic_write_json(tmp / REPORT_FILE, report)
        atomic_write_json(tmp / SENSITIVITY_FILE, {"unit": "dB", "feeds": opt.sensitivity_samples, "groups": sensitivity})
        new_manifest["files"] = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file() and p.name != "manifest.json"}
        write_manifest(tmp, new_manifest)
    say(f"wrote {out_dir}")
    return QuantizeResult(out_dir, config.precision, report, sensitivity)


def _promote(plans: dict[str, Any], sensitivity: list[dict[str, Any]], min_sqnr: float | None) -> list[str]:
    """Lower groups the defaults keep (attention, heads, embeddings) where measurement shows
    they cost little: isolated SQNR >= `min_sqnr` dB. User exclusions are never promoted."""
    if min_sqnr is None:
        return []
    out = []
    for r in sensitivity:
        plan = plans[r["graph"]]
        g = r["group"]
        if g in plan.default or r["sqnr_db"] < min_sqnr:
            continue
        reasons = [plan.kept.get(n, [""])[0] for n in plan.groups[g]]
        if any("exclude_nodes" in x for x in reasons):
            continue
        plan.default.append(g)
        for n in plan.groups[g]:
            plan.kept.pop(n, None)
        out.append(f"{r['graph']}:{g}" if len(plans) > 1 else g)
    return sorted(out)


def _answers(folder: Path) -> list[str] | None:
    p = folder / "answers.json"
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except ValueError as e:
        raise QuantizeError(f"{p} is not valid JSON", "re-run `edgefuse export`", code="EF518") from e
    return data if isinstance(data, list) else data.get("answers")


def _op(model: onnx.ModelProto, name: str) -> str:
    return next((n.op_type for n in model.graph.node if n.name == name), "?")


def _manifest(parent: dict[str, Any], precision: str, datas: dict[str, bytes], report: dict[str, Any], created_by: str) -> dict[str, Any]:
    m = {k: v for k, v in parent.items() if k not in ("parent", "files", "created_by", "tool_versions", "verification")}
    m.update({
        "precision": precision,
        "parent": parent,
        "created_by": created_by,
        "tool_versions": tool_versions("onnx", "onnxruntime", "nncf", "numpy"),
        "quantization": {"recipe": report["recipe"], "model_sha256": {f: sha256_bytes(d) for f, d in datas.items()},
                         "calibration_sha256": report["calibration"]["data_sha256"], "report": REPORT_FILE},
    })
    return m
