"""CLI verb `edgefuse bench`: side-by-side latency / throughput / memory in one run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def _ints(text: str) -> list[int]:
    from edgefuse.bench.core import BenchError

    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise BenchError(f"bad batch list '{text}'", "use comma-separated integers, e.g. --batch 1,8", code="EF954") from e


def bench(
    artifacts: list[Path] = typer.Argument(None, help="Artifact folders, .onnx files or engine folders."),
    torch_model: Optional[str] = typer.Option(None, "--torch", help="Also run this zoo model in PyTorch eager (the baseline)."),
    random_weights: bool = typer.Option(False, "--random-weights", help="PyTorch model with random weights (same speed; no trained weights needed)."),
    batch: str = typer.Option("1,8", "--batch", help="Comma-separated batch sizes."),
    text_length: int = typer.Option(16, "--text-length", help="Question length in tokens (with padding)."),
    runs: int = typer.Option(30, "--runs", help="Timed runs per variant and batch, spread over the passes."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed runs before the first pass."),
    passes: int = typer.Option(3, "--passes", help="Interleaved passes over the variants."),
    threads: int = typer.Option(0, "--threads", help="Intra-op threads for torch and ONNX Runtime (0 = library default)."),
    provider: str = typer.Option("cpu", "--provider", help="ONNX Runtime provider for ONNX artifacts: cpu | cuda | tensorrt."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the full result here (JSON)."),
    md_out: Optional[Path] = typer.Option(None, "--md", help="Write the table here (Markdown)."),
) -> None:
    """Latency (median/p90), throughput and peak memory, side by side, one process per variant."""
    from rich.console import Console
    from rich.table import Table

    from edgefuse.artifacts import atomic_write_json, atomic_write_text
    from edgefuse.bench.core import run_bench, to_markdown, variants_from_args

    import sys

    console = Console(width=None if sys.stdout.isatty() else 120)
    variants = variants_from_args([str(a) for a in artifacts or []], torch_model, provider, threads, not random_weights)
    with console.status("benchmarking") as status:
        result = run_bench(variants, _ints(batch), text_length, runs, warmup, passes, progress=status.update)
    table = Table(title=f"edgefuse bench (baseline {result['baseline']}, {result['machine']['cores']} cores)")
    for col in ("variant", "batch", "median ms", "p90 ms", "items/s", "speed-up", "peak RSS MB", "mem ratio"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for r in result["rows"]:
        table.add_row(r["variant"], str(r["batch"]), f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['throughput_per_s']:.1f}",
                      f"{r['speedup']:.2f}x", f"{r['peak_rss_mb']:.0f}", f"{r['memory_ratio']:.2f}")
    console.print(table)
    if json_out:
        atomic_write_json(json_out, result)
        console.print(f"json: {json_out}")
    if md_out:
        atomic_write_text(md_out, to_markdown(result))
        console.print(f"markdown: {md_out}")
