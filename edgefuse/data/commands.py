"""`edgefuse data`: write a museum split to a folder in the dataset format."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("data")(data)


def data(
    split: str = typer.Argument(..., help="train, val or test"),
    out: Path = typer.Argument(..., help="output folder (images/ + annotations.jsonl)"),
    n: int | None = typer.Option(None, "--n", help="number of images (default: the split's size)"),
    seed: int | None = typer.Option(None, "--seed", help="replace the split's fixed seed (extra data)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing folder"),
) -> None:
    """Write a museum split as images/<id>.png + annotations.jsonl (the format you bring your own data in)."""
    import time

    from rich.console import Console
    from rich.progress import Progress

    from edgefuse.data import museum
    from edgefuse.data.dataset import Summary, write_dataset
    from edgefuse.errors import DataError

    console = Console()
    museum.stream_seed(split, seed)  # split typo -> near-miss suggestion, before any work
    count = museum.SPLITS[split][0] if n is None else n
    if count < 1:
        raise DataError(f"--n must be >= 1, got {count}", "pass the number of images to write", code="EF211")
    summary = Summary()
    t0 = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"{split}", total=count)

        def items():
            for item in museum.iter_items(split, count, seed):
                summary.add(item)
                yield item
                progress.advance(task)

        written = write_dataset(items(), out, overwrite=overwrite)
    dt = time.perf_counter() - t0
    console.print(f"wrote {written} {split} images to {out} in {dt:.1f} s")
    console.print(summary_table(summary))
    console.print(
        f"next: edgefuse validate ARTIFACT_FOLDER --eval-set {out}  "
        f"(or calibrate on it: calibration.source: {out} in edge_config.yaml)",
        soft_wrap=True,
        markup=False,
    )

def summary_table(summary):  # -> rich.table.Table
    """Questions and answers per kind, plus the caption/phrase counts."""
    from rich.table import Table

    table = Table(title=(
        f"{summary.images} images, {summary.questions} questions, {summary.captions} captions, "
        f"{summary.negative_captions} negative captions, {summary.refs} phrases with boxes"
    ))
    table.add_column("kind")
    table.add_column("questions", justify="right")
    table.add_column("answers (count)")
    for kind, counts in sorted(summary.answers.items()):
        answers = ", ".join(f"{a} {c}" for a, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        table.add_row(kind, str(sum(counts.values())), answers)
    return table
