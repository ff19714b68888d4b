"""`edgefuse models`: list the zoo (family, tasks, parameters, size, weights status) or show one entry."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    app.command("models")(models)


def models(
    name: str = typer.Argument(None, help="Show one model's config and input/output specs."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    text_tower: str = typer.Option(None, "--text-tower", help="Use a pretrained BERT-family text tower: 'minilm' or a local folder."),
) -> None:
    """List the model zoo with parameter counts, FP32 size, tasks and weights status."""
    from rich.console import Console
    from rich.table import Table

    from edgefuse.models import zoo

    console = Console()
    overrides = {"text_tower": text_tower} if text_tower else {}
    names = [name] if name else zoo.list_models()
    rows = []
    for n in names:
        entry = zoo.get_entry(n, **overrides)
        params = zoo.count_parameters(entry.build())
        rows.append({"name": n, "family": entry.family, "tasks": list(entry.tasks), "parameters": params,
                     "size_mb": round(params * 4 / 2**20, 2), "weights": zoo.weights_status(n) if not overrides else "n/a (overridden config)",
                     "weights_file": str(entry.weights_file), "default": n == zoo.DEFAULT_MODEL,
                     "description": entry.description,
                     **({"config": entry.config, "graphs": entry.graph_specs()} if name else {})})
    if as_json:
        typer.echo(json.dumps(rows if not name else rows[0], indent=2, default=str))
        return
    table = Table(title="edgefuse model zoo")
    for col in ("name", "family", "tasks", "params", "FP32 MB", "weights"):
        table.add_column(col, justify="right" if col in ("params", "FP32 MB") else "left")
    for r in rows:
        label = r["name"] + (" (default)" if r["default"] else "")
        table.add_row(label, r["family"], ", ".join(r["tasks"]), f"{r['parameters'] / 1e6:.2f} M", f"{r['size_mb']:.1f}",
                      r["weights"])
    console.print(table)
    if name:
        r = rows[0]
        console.print(r["description"])
        console.print_json(json.dumps({"config": r["config"], "graphs": r["graphs"]}, default=str))
    missing = [r["name"] for r in rows if r["weights"] != "shipped"]
    if missing:
        console.print(f"next: edgefuse train {missing[0]}")
