"""`edgefuse pipeline`: export -> quantize (the config's precisions) -> validate, in one go.

The README's main job: from edge_config.yaml (or the defaults) it exports the model to a
verified FP32 ONNX artifact, makes the FP16 / INT8 artifacts, validates all of them against
the FP32 PyTorch model and writes the four reports. Exit code as `edgefuse validate`: 0 every
gate passed, 1 a gate failed, 2 an error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from edgefuse.config import EdgeConfig
    from edgefuse.parity.reports import ValidationReport

log = logging.getLogger(__name__)

DEFAULT_VALIDATE_N = 50  # museum test images validated by the pipeline (~700 questions; edgefuse validate for all 500)
DEFAULT_QUANTIZE_EVAL = 64  # labelled samples the quantize stage measures its own drops on


@dataclass
class PipelineResult:
    """What the pipeline produced: artifact folders per precision, the report, stage times."""

    artifacts: dict[str, Path]
    report: ValidationReport
    report_dir: Path
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return self.report.exit_code

    def to_dict(self) -> dict[str, Any]:
        """pipeline.json: what ran, where it went, how long each stage took, the verdict."""
        return {"model": self.report.model.get("name"), "artifacts": {k: str(v) for k, v in self.artifacts.items()},
                "report_dir": str(self.report_dir), "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
                "exit_code": self.exit_code, "gate_counts": self.report.counts()}


def artifact_name(model: str, precision: str) -> str:
    safe = model.replace(":", "-").replace("/", "-").replace(".", "-") if ":" in model else Path(model).name
    return f"{safe}-{precision}"


def run_pipeline(config: EdgeConfig | str | Path | None = None, out: str | Path | None = None, n: int | None = DEFAULT_VALIDATE_N,
                 overwrite: bool = True, quantize_eval_samples: int = DEFAULT_QUANTIZE_EVAL, threads: int = 1,
                 resamples: int = 1000, progress: Callable[[str], None] | None = None) -> PipelineResult:
    """Export, quantize and validate the config's model; reports in `<out>/report`."""
    from edgefuse.artifacts import atomic_write_json
    from edgefuse.config import EdgeConfig, load_config
    from edgefuse.export.exporter import export_model
    from edgefuse.parity.gates import check_gates
    from edgefuse.parity.validate import validate
    from edgefuse.quantize.api import CalibrationOptions, QuantizeOptions, quantize_artifact
    from edgefuse.quantize.configs import make_config

    say = progress or (lambda msg: log.info(msg))
    cfg = config if isinstance(config, EdgeConfig) else load_config(config)
    check_gates(cfg.gates)  # a bad gate fails in a second, not after the export
    out_dir = Path(out if out is not None else cfg.export.output_dir)
    name = cfg.model.name
    seconds: dict[str, float] = {}
    artifacts: dict[str, Path] = {}

    t = time.perf_counter()
    say(f"[1/3] export {name} -> {out_dir / artifact_name(name, 'fp32')}")
    exp = export_model(name, out_dir / artifact_name(name, "fp32"), opset=cfg.export.opset, overwrite=overwrite,
                       weights=cfg.model.weights, verify=cfg.export.verify, created_by="edgefuse pipeline")
    artifacts["fp32"] = exp.folder
    seconds["export"] = time.perf_counter() - t

    t = time.perf_counter()
    for precision in [p for p in cfg.quantize.precisions if p != "fp32"]:
        target = out_dir / artifact_name(name, precision)
        say(f"[2/3] quantize {precision} -> {target}")
        q = cfg.quantize
        recipe = make_config(precision, q.backend, q.calibration_method)
        res = quantize_artifact(
            exp.folder, recipe, target,
            calibration=CalibrationOptions(source=cfg.calibration.source, num_samples=cfg.calibration.num_samples,
                                           seed=cfg.calibration.seed, cache_dir=cfg.calibration.cache_dir),
            options=QuantizeOptions(budget_metric=q.budget_metric if q.budget_max_drop is not None else None,
                                    max_drop=q.budget_max_drop if q.budget_metric is not None else None,
                                    eval_samples=quantize_eval_samples, threads=max(threads, 1), overwrite=overwrite,
                                    created_by="edgefuse pipeline"),
            progress=lambda m: log.info(m))
        artifacts[precision] = res.folder
    seconds["quantize"] = time.perf_counter() - t

    t = time.perf_counter()
    report_dir = out_dir / "report"
    say(f"[3/3] validate {', '.join(p.name for p in artifacts.values())} against FP32 PyTorch -> {report_dir}")
    report = validate(list(artifacts.values()), model=name, weights=cfg.model.weights, n=n, config=cfg, report_dir=report_dir,
                      provider="cpu", threads=threads, resamples=resamples, command="edgefuse pipeline")
    seconds["validate"] = time.perf_counter() - t
    seconds["total"] = sum(seconds.values())
    result = PipelineResult(artifacts, report, report_dir, seconds)
    atomic_write_json(out_dir / "pipeline.json", result.to_dict())
    return result


def register(app: typer.Typer) -> None:
    @app.command("pipeline")
    def pipeline_cmd(
        config: str | None = typer.Option(None, "--config", "-c", help="edge_config.yaml; default ./edge_config.yaml or built-in defaults."),
        out: str | None = typer.Option(None, "--out", "-o", help="Output folder (default: export.output_dir from the config)."),
        n: int = typer.Option(DEFAULT_VALIDATE_N, "--n", help="Museum test images to validate on."),
        overwrite: bool = typer.Option(True, "--overwrite/--no-overwrite", help="Replace artifacts from an earlier run."),
        threads: int = typer.Option(1, "--threads", help="CPU threads per stage (1 = steady on busy machines; 0 = library default)."),
    ) -> None:
        """Export -> quantize -> validate the config's model; reports + exit 0 (gates pass) / 1 (a gate failed)."""
        from rich.console import Console
        from rich.table import Table

        from edgefuse.parity.commands import print_summary

        console = Console()
        res = run_pipeline(config, out, n=n, overwrite=overwrite, threads=threads,
                           progress=lambda m: console.print(m, highlight=False))
        print_summary(res.report, res.report_dir)
        t = Table(title="pipeline stages")
        t.add_column("stage")
        t.add_column("seconds", justify="right")
        t.add_column("output")
        t.add_row("export", f"{res.seconds['export']:.1f}", str(res.artifacts["fp32"]))
        t.add_row("quantize", f"{res.seconds['quantize']:.1f}", ", ".join(str(p) for k, p in res.artifacts.items() if k != "fp32") or "-")
        t.add_row("validate", f"{res.seconds['validate']:.1f}", str(res.report_dir))
        t.add_row("total", f"{res.seconds['total']:.1f}", "", end_section=True)
        console.print(t)
        console.print(f"next: open {res.report_dir / 'report.html'}, or serve the kiosk: "
                      f"edgefuse serve --artifact {res.artifacts.get('int8', res.artifacts['fp32'])}", highlight=False)
        raise typer.Exit(res.exit_code)
