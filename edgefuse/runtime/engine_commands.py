"""CLI verbs `edgefuse build` (ONNX artifact -> TensorRT / TensorRT-RTX engine) and `edgefuse doctor`.

Nothing heavy is imported here: TensorRT, onnx and onnxruntime load inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("build")(build)
    app.command("doctor")(doctor)


def build(
    artifact: Path = typer.Argument(..., help="ONNX artifact folder (export/quantize output) or a .onnx file."),
    target: str = typer.Option(..., "--target", "-t", help="Target name from edge_config.yaml (e.g. desktop-rtx, jetson-orin-jp6)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Engine folder (default: <artifact>-<target> beside the artifact)."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="Timing cache file, read before and updated after the build."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="edge_config.yaml (default: ./edge_config.yaml or built-in)."),
    split: Optional[bool] = typer.Option(None, "--split/--no-split", help="Vision/text/fusion engines (default: the target's split_engines)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing engine folder."),
) -> None:
    """Build a serialized engine for a target from an FP32/FP16/INT8-QDQ ONNX artifact, with its manifest."""
    from rich.console import Console
    from rich.table import Table

    from edgefuse.config import load_config
    from edgefuse.runtime.engines.build import build_engines

    console = Console()
    cfg = load_config(config)
    res = build_engines(artifact, target, cfg, out=out, timing_cache=timing_cache, overwrite=overwrite, split=split)
    m = res.manifest
    table = Table(title=f"{m['flavour']} {m['tensorrt_version']} engines for {target} (compute capability {', '.join(m['compute_capability'])})")
    for col in ("engine", "MB", "build s", "inputs (min / opt / max)"):
        table.add_column(col)
    for e in m["engines"]:
        items = list(e["profile_shapes"].items())
        prof = "; ".join(f"{k} {v['min']} / {v['opt']} / {v['max']}" for k, v in items[:3])
        if len(items) > 3:
            prof += f"; +{len(items) - 3} more inputs (manifest.json)"
        table.add_row(e["file"], f"{e['bytes'] / 1e6:.2f}", f"{e['build_seconds']:.2f}", prof)
    console.print(table)
    if m["build"].get("timing_cache_note"):
        console.print(f"[yellow]note:[/] {m['build']['timing_cache_note']}")
    console.print(f"engine folder: {res.folder}  ({res.seconds:.1f} s, precision {m.get('precision')})")
    console.print(f"next: on the device, `edgefuse doctor --target {target} --engine {res.folder}`")


def doctor(
    target: str = typer.Option(..., "--target", "-t", help="Target name from edge_config.yaml."),
    artifact: Optional[Path] = typer.Argument(None, help="ONNX artifact to build from and compare against."),
    engine: Optional[Path] = typer.Option(None, "--engine", help="Use this engine folder instead of building one."),
    n: int = typer.Option(8, "--n", help="Evaluation items for the parity check."),
    report_dir: Path = typer.Option(Path("doctor-report"), "--report-dir", help="Where doctor.json and doctor.md go."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="Timing cache for the build."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="edge_config.yaml."),
) -> None:
    """Check a target on this device: library, GPU, build or load the engine, parity against the ONNX artifact."""
    from rich.console import Console
    from rich.table import Table

    from edgefuse.config import load_config
    from edgefuse.runtime.engines.doctor import run_doctor

    console = Console()
    report, folder = run_doctor(target, load_config(config), artifact=artifact, engine=engine, n=n, report_dir=report_dir,
                                timing_cache=timing_cache)
    table = Table(title=f"doctor: {target} ({report.flavour})")
    for col in ("check", "status", "detail"):
        table.add_column(col)
    colour = {"pass": "green", "fail": "red", "skip": "yellow"}
    for c in report.checks:
        table.add_row(c.name, f"[{colour[c.status]}]{c.status}[/]", c.detail)
    console.print(table)
    console.print(f"report: {folder / 'doctor.json'}, {folder / 'doctor.md'}")
    if not report.ok:
        raise typer.Exit(1)
