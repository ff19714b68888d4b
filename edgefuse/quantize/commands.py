"""`edgefuse quantize`: FP32 artifact -> FP16 / INT8 artifact (CLI over quantize.api)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("quantize")
    def quantize(
        artifact: Path = typer.Argument(..., help="FP32 artifact folder written by `edgefuse export`."),
        precision: str = typer.Option(..., "--precision", "-p", help="fp16 | int8"),
        backend: str = typer.Option(None, "--backend", help="INT8 backend: ort | nncf (default: edge_config.yaml quantize.backend)."),
        method: str = typer.Option(None, "--method", help="INT8 calibration: minmax | entropy | percentile."),
        budget_metric: str = typer.Option(None, "--budget-metric", help="Task metric for the accuracy budget (e.g. vqa_accuracy)."),
        max_drop: float = typer.Option(None, "--max-drop", help="Largest allowed drop of the budget metric, in points."),
        no_budget: bool = typer.Option(False, "--no-budget", help="Ignore the budget in edge_config.yaml."),
        out: Path = typer.Option(None, "--out", "-o", help="Output folder (default: <artifact>-<precision>)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
        calibration: str = typer.Option(None, "--calibration", help="'museum' or a folder of images + annotations.jsonl."),
        num_samples: int = typer.Option(None, "--num-samples", help="Calibration pairs (default: calibration.num_samples)."),
        seed: int = typer.Option(None, "--seed", help="Calibration sampling seed."),
        eval_samples: int = typer.Option(200, "--eval-samples", help="Labelled museum val samples per task for the drops (0 = skip)."),
        quantize_attention: bool = typer.Option(False, "--quantize-attention", help="INT8: also lower the attention-score MatMuls."),
        quantize_head: bool = typer.Option(False, "--quantize-head", help="INT8: also lower the final head layers."),
        for_cpu: bool = typer.Option(False, "--for-cpu", help="INT8 for ONNX Runtime's CPU kernels: per-tensor 7-bit weights "
                                     "(fused into integer MatMuls, no u8s8 saturation without VNNI) instead of TensorRT's per-channel."),
        promote_above: float = typer.Option(None, "--promote-above", help="INT8: also lower kept groups whose measured SQNR "
                                            "alone is at least this many dB."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the calibration statistics cache."),
        threads: int = typer.Option(1, "--threads", help="ONNX Runtime threads while measuring."),
        config: Path = typer.Option(None, "--config", help="edge_config.yaml (default: ./edge_config.yaml if present)."),
    ) -> None:
        """Quantize an FP32 artifact to FP16 or INT8 (QDQ) with calibration, sensitivity and an accuracy budget."""
        from rich.console import Console
        from rich.table import Table

        from edgefuse.config import load_config
        from edgefuse.quantize.api import CalibrationOptions, QuantizeOptions, quantize_artifact
        from edgefuse.quantize.configs import make_config

        console = Console()
        cfg = load_config(config)
        overrides = {}
        if precision == "int8":
            overrides = {"quantize_attention": quantize_attention, "quantize_head": quantize_head, "promote_min_sqnr": promote_above}
            if for_cpu:
                overrides.update(per_channel=False, reduce_range=True)
        recipe = make_config(precision, backend or cfg.quantize.backend, method or cfg.quantize.calibration_method, **overrides)
        metric, drop = budget_metric, max_drop
        if not no_budget and metric is None and drop is None:
            metric, drop = cfg.quantize.budget_metric, cfg.quantize.budget_max_drop
        if no_budget:
            metric = drop = None
        if metric is not None and drop is None:
            drop = cfg.quantize.budget_max_drop
        cal = CalibrationOptions(source=calibration or cfg.calibration.source, num_samples=num_samples or cfg.calibration.num_samples,
                                 seed=cfg.calibration.seed if seed is None else seed,
                                 cache_dir=None if no_cache else cfg.calibration.cache_dir)
        opts = QuantizeOptions(budget_metric=metric, max_drop=drop, eval_samples=eval_samples, threads=threads, overwrite=overwrite,
                               budget_optional=budget_metric is None,
                               created_by="edgefuse quantize " + " ".join(_argv()))
        with console.status("quantizing...") as status:
            result = quantize_artifact(artifact, recipe, out, cal, opts, progress=lambda m: status.update(m))
        rep = result.report
        console.print(f"[bold]{result.precision}[/] artifact: {result.folder}")
        cov = rep["calibration"]["coverage"]
        console.print(f"calibration: {cov['pairs']} pairs from {cov['images']} images, text lengths {cov['text_length_range']}"
                      f" (cache {'hit' if rep['details'].get('calibration_cache_hit') or rep['details'].get('activation_stats_cache_hit') else 'miss'})")
        g = rep["groups"]
        console.print(f"groups lowered: {len(g['lowered'])} of {g['total']}; nodes kept in higher precision: "
                      f"{len(rep['kept_in_higher_precision'])} (see {result.folder / 'quantize_report.json'})")
        if result.sensitivity:
            t = Table(title="most sensitive groups (SQNR vs FP32 with only that group lowered)")
            t.add_column("group")
            t.add_column("default")
            t.add_column("SQNR dB", justify="right")
            multi = len({r.get("graph") for r in result.sensitivity}) > 1
            for r in result.sensitivity[:8]:
                name = f"{r['graph']}:{r['group']}" if multi else r["group"]
                t.add_row(name, "lowered" if r["default"] else "kept", f"{r['sqnr_db']:.1f}")
            console.print(t)
        m = rep.get("metrics") or {}
        if m:
            t = Table(title="task metrics vs FP32 (percent; drop in points)")
            for c in ("metric", "fp32", "quantized", "drop", "drop (CPU kernels)"):
                t.add_column(c, justify="right" if c != "metric" else "left")
            mode = "simulated" if "simulated" in m else "cpu"
            for k, v in m[mode]["values"].items():
                ref = m["reference_fp32"].get(k)
                cpu = m.get("cpu_kernels", {}).get("drops", {}).get(k)
                t.add_row(k, "" if ref is None else f"{ref:.2f}", f"{v:.2f}", f"{m[mode]['drops'][k]:.2f}", "" if cpu is None else f"{cpu:.2f}")
            console.print(t)
        if rep.get("promoted"):
            console.print(f"promoted by measurement (SQNR >= {promote_above} dB): {', '.join(rep['promoted'])}")
        b = rep.get("budget")
        if b:
            state = "[green]met[/]" if b["met"] else "[red]missed[/]"
            console.print(f"budget {b['metric']} <= {b['max_drop']} pt: {state}; drop {b['initial_drop']:.2f} -> {b['final_drop']:.2f} pt, "
                          f"reverted {len(b['reverted'])} group(s){': ' + ', '.join(b['reverted']) if b['reverted'] else ''}")
        sz = rep["size_bytes"]
        console.print(f"file: {sz['quantized'] / 1e6:.2f} MB ({100 * sz['quantized'] / max(1, sz['fp32']):.0f}% of FP32)")
        console.print(f"next: edgefuse validate {result.folder}")


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]
