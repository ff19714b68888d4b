"""`edgefuse data`: write a museum split to a folder in the dataset format, or check a folder
(`edgefuse data check FOLDER`) before training, calibrating or validating on it."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("data")(data)


def data(
    split: str = typer.Argument(..., help="train, val or test; or check (read FOLDER and report)"),
    out: Path = typer.Argument(..., help="output folder (images/ + annotations.jsonl); the folder to check"),
    n: int | None = typer.Option(None, "--n", help="number of images (default: the split's size)"),
    seed: int | None = typer.Option(None, "--seed", help="replace the split's fixed seed (extra data)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing folder"),
    preview: bool = typer.Option(False, "--preview", help="also write preview.png: the first 32 images with their boxes"),
) -> None:
    """Write a museum split as images/<id>.png + annotations.jsonl (the format you bring your own data in).

    `edgefuse data check FOLDER` reads your own folder in that format and reports what is in it.
    """
    from edgefuse.data.museum import SPLITS
    from edgefuse.errors import DataError, suggest

    if split == "check":
        check(out, preview)
        return
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'", suggest(split, [*SPLITS, "check"]), code="EF210")
    import time

    from rich.console import Console
    from rich.progress import Progress

    from edgefuse.data import museum
    from edgefuse.data.dataset import Summary, write_dataset

    console = Console()
    museum.stream_seed(split, seed)  # bad seed -> typed error, before any work
    count = museum.SPLITS[split][0] if n is None else n
    if count < 1:
        raise DataError(f"--n must be >= 1, got {count}", "pass the number of images to write", code="EF211")
    summary = Summary()
    t0 = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"{split}", total=count)

        first: list = []

        def items():
            for item in museum.iter_items(split, count, seed):
                summary.add(item)
                if len(first) < 32:
                    first.append(item)
                yield item
                progress.advance(task)

        written = write_dataset(items(), out, overwrite=overwrite)
    if preview:
        _write_preview(first, out, console)
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


def _write_preview(items: list, folder: Path, console) -> None:
    import io

    from PIL import Image

    from edgefuse.artifacts import atomic_write_bytes
    from edgefuse.data.dataset import contact_sheet

    buf = io.BytesIO()
    Image.fromarray(contact_sheet(items)).save(buf, format="PNG")
    path = atomic_write_bytes(Path(folder) / "preview.png", buf.getvalue())
    console.print(f"preview: {path}", markup=False)


def check(folder: Path, preview: bool = False) -> None:
    """Read every line and image of a dataset folder; print counts and answers the zoo can't give."""
    from rich.console import Console

    from edgefuse.data.dataset import Summary, iter_dataset
    from edgefuse.data.museum import answer_vocabulary
    from edgefuse.errors import DataError

    console = Console()
    summary = Summary()
    first: list = []
    for item in iter_dataset(folder):  # any bad line or image raises a DataError naming it
        summary.add(item)
        if len(first) < 32:
            first.append(item)
    if summary.images == 0:
        raise DataError(f"{folder} has no items", "add one JSON object per image to annotations.jsonl", code="EF207")
    console.print(f"ok: {folder} reads cleanly")
    if preview:
        _write_preview(first, folder, console)
    console.print(summary_table(summary))
    known = set(answer_vocabulary())
    outside = sorted({a for c in summary.answers.values() for a in c} - known)
    if outside:
        shown = ", ".join(outside[:10]) + (" ..." if len(outside) > 10 else "")
        console.print(
            f"note: {len(outside)} answers are outside the museum answer vocabulary ({shown}); "
            "the shipped VQA heads cannot predict them",
            markup=False,
        )
    console.print(f"next: edgefuse validate ARTIFACT_FOLDER --eval-set {folder}", markup=False, soft_wrap=True)
