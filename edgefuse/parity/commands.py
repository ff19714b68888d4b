"""`edgefuse validate`: FP32 PyTorch vs artifacts, gates, reports; exit 0 pass, 1 gate failed, 2 error."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from edgefuse.parity.reports import ValidationReport

DEFAULT_REPORT_DIR = "reports/validate"


def print_summary(report: ValidationReport, report_dir: str | Path | None) -> None:
    """The summary table a person reads in a terminal or CI log."""
    from rich.console import Console
    from rich.table import Table

    from edgefuse.parity.catalog import format_drop, format_value, lookup
    from edgefuse.parity.reports import headline

    console = Console()
    shown = [n for n in ("vqa_accuracy", "vqa_agreement", "itm_accuracy", "itm_auc", "retrieval_i2t_r1", "retrieval_t2i_r1",
                         "grounding_miou", "grounding_iou50", "grounding_ref_iou", "caption_bleu4", "caption_agreement")
             if any(n in a.metrics for a in report.artifacts)]
    t = Table(title=f"{report.model.get('name')}: FP32 PyTorch vs artifacts, {report.eval_set.get('source')}")
    t.add_column("metric")
    t.add_column("FP32 PyTorch", justify="right")
    for a in report.artifacts:
        t.add_column(f"{a.name}\nvalue (drop)", justify="right")
    for n in shown:
        d = lookup(n)
        cells = []
        for a in report.artifacts:
            m = a.metrics.get(n)
            cells.append("n/a" if m is None else f"{format_value(d, m.value)} ({format_drop(d, m.drop)})")
        t.add_row(n, format_value(d, report.reference.get(n, d.ideal)), *cells)
    verdicts = []
    for a in report.artifacts:
        c = {s: sum(1 for g in a.gates if g.status == s) for s in ("passed", "failed", "skipped")}
        v = f"[red]{c['failed']} failed[/red], {c['passed']} passed" if c["failed"] else f"[green]{c['passed']} passed[/green]"
        verdicts.append(v + (f", {c['skipped']} skipped" if c["skipped"] else ""))
    t.add_row("gates", "", *verdicts, end_section=True)
    console.print(t)
    for g in report.gate_results:
        if g.status == "failed":
            console.print(f"[red]FAILED[/red] {g.artifact}: {g.title}: {g.message}", highlight=False)
    style = "green" if report.passed else "red"
    console.print(f"[{style}]{headline(report)}[/{style}] in {report.seconds:.1f} s", highlight=False)
    if report_dir is not None:
        console.print(f"reports: {Path(report_dir) / 'report.html'} (+ report.json, report.md, junit.xml)", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("validate")
    def validate_cmd(
        artifacts: list[str] = typer.Argument(..., help="Artifact folders (export / quantize output) or model files."),
        config: str | None = typer.Option(None, "--config", "-c", help="edge_config.yaml (gates, model); default ./edge_config.yaml."),
        model: str | None = typer.Option(None, "--model", "-m", help="Reference zoo model (default: the artifacts' model)."),
        weights: str | None = typer.Option(None, "--weights", help="Reference weights .safetensors (default: shipped)."),
        eval_set: str = typer.Option("museum", "--eval-set", help="'museum' (test split) or a folder with images/ + annotations.jsonl."),
        n: int | None = typer.Option(None, "--n", help="Evaluate the first N images (default: all)."),
        report_dir: str = typer.Option(DEFAULT_REPORT_DIR, "--report-dir", "-o", help="Folder for report.json/.md/.html and junit.xml."),
        provider: str = typer.Option("cpu", "--provider", help="ONNX Runtime provider: cpu | cuda | tensorrt."),
        batch_size: int = typer.Option(32, "--batch-size", help="Rows per inference call."),
        resamples: int = typer.Option(1000, "--resamples", help="Bootstrap resamples for the intervals."),
        seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
        qdq: str = typer.Option("kernels", "--qdq", help="INT8 QDQ on CPU: 'kernels' (this CPU's integer kernels) or "
                                "'simulated' (Q/DQ in float, as TensorRT computes; host-independent)."),
        threads: int = typer.Option(1, "--threads", help="CPU threads for PyTorch and ONNX Runtime each (1 = steady on busy machines; 0 = library default)."),
    ) -> None:
        """Check artifacts against the FP32 PyTorch model: task + tensor metrics, gates, reports.

        Exit code 0 when every gate passes, 1 when a gate fails, 2 on an error.
        """
        import sys

        from edgefuse.parity.validate import validate

        report = validate(artifacts, model=model, weights=weights, eval_set=eval_set, n=n, config=config, report_dir=report_dir,
                          provider=provider, batch_size=batch_size, resamples=resamples, seed=seed, threads=threads, qdq=qdq,
                          command="edgefuse " + " ".join(sys.argv[1:]),
                          progress=lambda msg: typer.echo(msg, err=True))
        print_summary(report, report_dir)
        raise typer.Exit(report.exit_code)
