"""`edgefuse train` and `edgefuse eval`: train a zoo model with the shipped recipe; measure the FP32 model."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("eval")(eval_cmd)


def _check_model(name: str) -> None:
    from edgefuse.models.zoo import get_entry

    get_entry(name)  # unknown names -> typed error with the list of valid ones


def train(
    model: str = typer.Argument(..., help="Zoo model name, e.g. museum-dual."),
    steps: int = typer.Option(None, "--steps", help="Optimizer steps (default: the model's shipped recipe)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Images per micro-batch."),
    accum: int = typer.Option(None, "--accum", help="Micro-batches per optimizer step (gradient accumulation)."),
    lr: float = typer.Option(None, "--lr", help="Peak learning rate (AdamW)."),
    warmup: int = typer.Option(None, "--warmup", help="Steps of linear warmup before the cosine decay."),
    seed: int = typer.Option(None, "--seed", help="Seed: the same seed gives the same loss curve."),
    n_train: int = typer.Option(None, "--n-train", help="Training images from the museum train split."),
    out: Path = typer.Option(None, "--out", help="Output folder (default: runs/<model>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from <out>/checkpoint."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0 = torch's default)."),
    eval_every: int = typer.Option(0, "--eval-every", help="Measure val metrics every N steps (0 = never; no effect on the loss curve)."),
    eval_n: int = typer.Option(200, "--eval-n", help="Val images for --eval-every."),
    settings: list[str] = typer.Option(None, "--set", help="KEY=VALUE recipe or model-config override (repeatable), e.g. --set dropout=0."),
) -> None:
    """Train MODEL with the article's multi-task recipe; write weights, tokenizer, answers and a log."""
    from edgefuse.errors import ConfigError

    _check_model(model)
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device '{device}'", "use --device cpu or --device cuda", code="EF124")
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from edgefuse.models.train import recipe
    from edgefuse.models.train import train as run_train

    if threads > 0:
        torch.set_num_threads(threads)
    cfg = recipe(model, _parse_settings(settings or []), steps=steps, batch_size=batch_size, accum=accum, lr=lr, warmup=warmup, seed=seed, n_train=n_train)
    out = out or Path("runs") / model
    console = Console()
    console.print(f"training {model}: {cfg.steps} steps x {cfg.batch_size} images x {cfg.accum} accum, lr {cfg.lr:g}, "
                  f"warmup {cfg.warmup}, seed {cfg.seed}, device {device}")
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as progress:
        task = progress.add_task(model, total=cfg.steps, info="rendering data")

        def on_step(rec: dict[str, float]) -> None:
            parts = " ".join(f"{k} {v:.3f}" for k, v in rec.items() if k not in ("step", "lr", "grad_norm") and not k.startswith("val_"))
            progress.update(task, completed=rec["step"], info=parts)
            vals = {k: v for k, v in rec.items() if k.startswith("val_")}
            if vals:
                progress.console.print(f"step {int(rec['step'])}: " + " ".join(f"{k} {v:.4f}" for k, v in vals.items()))

        result = run_train(cfg, out, resume=resume, device=device, on_step=on_step, eval_every=eval_every, eval_n=eval_n)
        progress.update(task, completed=result.steps)
    console.print(f"wrote {out} in {result.wall_s:.0f} s (final loss {result.final.get('loss', float('nan')):.4f})")
    console.print(f"next: edgefuse eval {model} --weights {out / 'model.safetensors'}")


def _parse_settings(items: list[str]) -> dict[str, object]:
    """KEY=VALUE pairs; values parse as JSON (numbers, true/false, lists) or stay strings."""
    import json

    from edgefuse.errors import ConfigError

    out: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"bad --set '{item}'", "write KEY=VALUE, e.g. --set dropout=0", code="EF125")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def eval_cmd(
    model: str = typer.Argument(..., help="Zoo model name, e.g. museum-dual."),
    split: str = typer.Option("test", "--split", help="Museum split: train, val or test."),
    n: int = typer.Option(None, "--n", help="First N images of the split (default: all)."),
    weights: Path = typer.Option(None, "--weights", help="A model.safetensors (default: the shipped weights)."),
    data: Path = typer.Option(None, "--data", help="A dataset folder (images/ + annotations.jsonl) instead of a museum split."),
    beams: int = typer.Option(1, "--beams", help="Beam width for captioning (1 = greedy)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Rows per forward pass."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    json_path: Path = typer.Option(None, "--json", help="Also write the metrics as JSON to this path."),
) -> None:
    """Print the metrics of the FP32 PyTorch model: VQA / ITM / grounding / captioning."""
    from rich.console import Console
    from rich.table import Table

    from edgefuse.artifacts import atomic_write_json
    from edgefuse.errors import ConfigError

    _check_model(model)
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device '{device}'", "use --device cpu or --device cuda", code="EF124")
    from edgefuse.data.museum import split_seed
    from edgefuse.models.evaluate import evaluate

    if data is None:
        split_seed(split)  # unknown split -> typed error
    res = evaluate(model, split=split, n=n, weights=weights, device=device, batch_size=batch_size, num_beams=beams, data_dir=data)
    console = Console()
    table = Table(title=f"{model} (FP32 PyTorch) on {res['data']}: {res['images']} images")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("n", justify="right")
    for row in metric_rows(res):
        table.add_row(*row)
    console.print(table)
    if json_path is not None:
        atomic_write_json(json_path, res)
        console.print(f"wrote {json_path}")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def metric_rows(res: dict) -> list[tuple[str, str, str]]:
    """(metric, value, count) rows for the eval table; shared with the model cards."""
    rows: list[tuple[str, str, str]] = []
    if "vqa" in res:
        v = res["vqa"]
        rows.append(("VQA accuracy", _pct(v["accuracy"]), str(v["questions"])))
        for kind, acc in v["by_kind"].items():
            rows.append((f"  {kind}", _pct(acc), ""))
    if "itm" in res:
        v = res["itm"]
        rows.append(("ITM accuracy", _pct(v["accuracy"]), f"{v['positives']}+/{v['negatives']}-"))
        rows.append(("ITM AUC", "n/a" if v["auc"] is None else f"{v['auc']:.4f}", ""))
    if "grounding" in res:
        v = res["grounding"]
        rows.append(("grounding mean IoU", "n/a" if v["mean_iou"] is None else f"{v['mean_iou']:.4f}", str(v["phrases"])))
        rows.append(("grounding IoU >= 0.5", _pct(v["iou_at_0.5"]), ""))
    if "captioning" in res:
        v = res["captioning"]
        rows.append(("caption BLEU-4", "n/a" if v["bleu4"] is None else f"{v['bleu4']:.4f}", str(v["images"])))
        rows.append(("caption exact match", _pct(v["exact_match"]), ""))
    return rows




if __name__ == "__main__":  # `python -m edgefuse.models.train_commands train|eval ...`: only these two verbs
    _app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(_app)
    _app()
