"""`edgefuse export` and `edgefuse inspect` (torch is imported inside the commands only)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("inspect")(inspect)


def export(
    model_arg: str = typer.Argument(None, metavar="MODEL",
                                    help="Zoo name (edgefuse models), package.module:factory, or hf:FOLDER (Optimum)."),
    model_opt: str = typer.Option(None, "--model", "-m", help="Same as MODEL (for package.module:factory)."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder (default: artifacts/<model>-fp32)."),
    opset: int = typer.Option(None, "--opset", help="ONNX opset, >= 17 (default: edge_config.yaml export.opset, 18)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
    weights: Path = typer.Option(None, "--weights", "-w", help="A .safetensors file (default: the shipped weights)."),
    random_init: bool = typer.Option(False, "--random-init", help="Export random-init weights (no trained weights needed)."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip ONNX Runtime vs PyTorch verification (not recommended)."),
    config: Path = typer.Option(None, "--config", "-c", help="edge_config.yaml (default: ./edge_config.yaml if present)."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Export a model to a verified FP32 ONNX artifact folder (model.onnx + manifest + tokenizer + answers)."""
    import sys

    from rich.console import Console
    from rich.table import Table

    from edgefuse.config import load_config
    from edgefuse.errors import ExportError
    from edgefuse.export.exporter import export_model

    if model_arg and model_opt and model_arg != model_opt:
        raise ExportError(f"two models given: '{model_arg}' and --model '{model_opt}'", "pass one", code="EF436")
    cfg = load_config(config)
    model = model_arg or model_opt or cfg.model.name
    if weights is None and cfg.model.weights and model == cfg.model.name:
        weights = Path(cfg.model.weights)
    console = Console(stderr=as_json)
    created_by = "edgefuse " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["export"] else f"edgefuse export {model}"
    with console.status(f"exporting {model} (dynamo exporter, then ONNX Runtime verification)"):
        res = export_model(model, out, opset=opset or cfg.export.opset, overwrite=overwrite, weights=weights,
                           pretrained=False if random_init else None, verify=cfg.export.verify and not no_verify,
                           created_by=created_by, output_dir=cfg.export.output_dir)
    m = res.manifest
    if as_json:
        typer.echo(json.dumps(m, indent=2, default=str))
        return
    if str(m.get("weights_source", "")).startswith("random-init"):
        console.print(f"[yellow]warning: no trained weights for {model}: exported random-init weights[/yellow] "
                      f"(train: edgefuse train {model})")
    table = Table(title=f"{m['model']} -> {res.folder} ({res.seconds:.1f} s): ONNX Runtime vs PyTorch")
    for col in ("graph", "output", "max abs", "max rel", "min cosine", "agreement"):
        table.add_column(col, justify="left" if col in ("graph", "output") else "right", no_wrap=col != "graph")
    for graph, summary in (m.get("verification") or {}).items():
        for name, s in (summary or {}).get("outputs", {}).items():
            if s.get("min_iou") is not None:
                agree = f"IoU {s['min_iou']:.4f}"
            else:
                agree = "-" if s.get("min_agreement") is None else f"{s['min_agreement']:.3f}"
            table.add_row(graph.removesuffix(".onnx"), name, f"{s['max_abs']:.1e}", f"{s['max_rel']:.1e}",
                          f"{s['min_cosine']:.6f}", agree)
        if isinstance(summary, dict) and "agreement" in summary:
            for k, v in summary["agreement"].items():
                table.add_row(graph, f"{k} caption", "", "", "", f"{v:.3f}")
    if m.get("verification"):
        console.print(table)
    else:
        console.print(f"exported {m['model']} -> {res.folder} ({res.seconds:.1f} s) [yellow]without verification[/yellow]")
    console.print(f"files: {', '.join(res.files)}")
    console.print(f"next: edgefuse inspect {res.folder}   |   edgefuse quantize {res.folder}")


def inspect(
    artifact: Path = typer.Argument(..., help="An artifact folder or an .onnx file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    top: int = typer.Option(12, "--top", help="Ops shown in the histogram."),
) -> None:
    """Show an artifact: op histogram, parameter count, size, inputs/outputs, manifest."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from edgefuse.export.inspect import inspect_artifact

    info = inspect_artifact(artifact)
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    console = Console()
    m = info["manifest"] or {}
    if m:
        console.print(f"[bold]{m.get('model')}[/bold] family {m.get('family')} tasks {', '.join(m.get('tasks', []))} "
                      f"precision {m.get('precision')} opset {m.get('opset')} weights {str(m.get('weights_sha256'))[:12]} "
                      f"({m.get('weights_source', '?')}) created by `{m.get('created_by')}`")
    for name, g in info["graphs"].items():
        console.print(f"\n[bold]{name}[/bold]: {g['size_bytes'] / 2**20:.2f} MiB, {g['parameters'] / 1e6:.3f} M parameters, "
                      f"{g['nodes']} nodes, opset {g['opset']}, LayerNormalization nodes {g['layer_norm_nodes']}"
                      + (" [red](LayerNorm decomposed)[/red]" if g["decomposed_layer_norm"] else ""))
        if g.get("suspect_baked_shapes"):
            console.print(f"[red]{len(g['suspect_baked_shapes'])} shape constant(s) hold the traced text length: "
                          f"{', '.join(g['suspect_baked_shapes'][:5])}[/red]")
        io = Table(show_header=True)
        for col in ("", "name", "dtype", "shape"):
            io.add_column(col)
        for kind in ("inputs", "outputs"):
            for t in g[kind]:
                io.add_row(kind[:-1], t["name"], t["dtype"], escape("[" + ", ".join(str(d) for d in t["shape"]) + "]"))
        console.print(io)
        ops = Table(title="op histogram")
        ops.add_column("op")
        ops.add_column("count", justify="right")
        for op, n in list(g["op_histogram"].items())[:top]:
            ops.add_row(op, str(n))
        rest = list(g["op_histogram"].items())[top:]
        if rest:
            ops.add_row(f"({len(rest)} more)", str(sum(n for _, n in rest)))
        console.print(ops)
    ver = m.get("verification") or {}
    for graph, summary in ver.items():
        if isinstance(summary, dict) and "passed" in summary:
            console.print(f"verification {graph}: {'passed' if summary['passed'] else 'FAILED'} on {len(summary['cases'])} cases")
