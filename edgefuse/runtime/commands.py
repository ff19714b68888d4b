"""CLI verbs of the kiosk room: `edgefuse ask` and `edgefuse serve`.

Nothing heavy at import time: onnxruntime, fastapi and uvicorn load inside the commands, and
torch only when the default artifact must be exported on first use (and torch is installed).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import typer

from edgefuse.errors import ArtifactError, InputError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "museum-dual"
DEFAULT_CAPTION_MODEL = "museum-caption"


def cache_root() -> Path:
    """Where default artifacts live: $EDGEFUSE_CACHE, else ~/.cache/edgefuse."""
    env = os.environ.get("EDGEFUSE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgefuse"


def torch_available() -> bool:
    """Whether torch could be imported, without importing it."""
    if "torch" in sys.modules:
        return sys.modules["torch"] is not None
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def _stale(folder: Path, model: str) -> bool:
    """A cached export of random-init weights is stale once trained weights ship with the package."""
    shipped = Path(__file__).resolve().parents[1] / "models" / "weights" / model / "model.safetensors"
    try:
        source = str(json.loads((folder / "manifest.json").read_text()).get("weights_source") or "")
    except (OSError, ValueError):
        return True
    return source.startswith("random-init") and shipped.is_file()


def default_artifact(model: str = DEFAULT_MODEL, export_if_missing: bool = True) -> Path:
    """The cached FP32 artifact of a shipped model, exported on first use when torch is installed.

    A kiosk without torch gets a typed error naming the command that makes the artifact.
    """
    folder = cache_root() / "artifacts" / f"{model}-fp32"
    if (folder / "manifest.json").is_file() and not _stale(folder, model):
        return folder
    if not export_if_missing or not torch_available():
        raise ArtifactError(f"no artifact for the default model '{model}' at {folder}",
                            f"run `edgefuse export {model}` on a machine with torch and pass --artifact <folder>, "
                            f"or copy the folder to {folder}", code="EF610")
    try:
        from edgefuse.export.exporter import export_model
    except ImportError as e:
        raise ArtifactError(f"cannot export '{model}' here: {e}", f"run `edgefuse export {model}` and pass --artifact", code="EF611") from e
    from rich.console import Console

    Console(stderr=True).print(f"first use: exporting the shipped model {model} to {folder} (once)")
    export_model(model, folder, overwrite=True, created_by=f"edgefuse ask/serve: default artifact for {model}")
    return folder


def _pipeline(artifact: Path | None, caption_artifact: Path | None, provider: str, threads: int, want_caption: bool,
              rc: Any) -> Any:
    from edgefuse.runtime.kiosk import KioskPipeline, Limits

    if artifact is None:
        artifact = default_artifact()
    if want_caption and caption_artifact is None:
        caption_artifact = default_artifact(DEFAULT_CAPTION_MODEL)
    return KioskPipeline(artifact, provider=provider, threads=threads, caption_artifact=caption_artifact,
                         limits=Limits.from_runtime(rc))


def register(app: typer.Typer) -> None:
    @app.command("ask")
    def ask(
        image: Path = typer.Argument(..., help="Photo of an exhibit (PNG, JPEG, ...)."),
        question: str = typer.Argument("", help="Question about it, e.g. 'what colour is the vase?'."),
        artifact: Path | None = typer.Option(None, "--artifact", "-a", help="Artifact folder (default: the shipped museum-dual model)."),
        caption: bool = typer.Option(False, "--caption", help="Also describe the photo (captioning artifact)."),
        caption_artifact: Path | None = typer.Option(None, "--caption-artifact", help="Captioning artifact folder (default: museum-caption)."),
        num_beams: int = typer.Option(1, "--num-beams", help="Beam width for --caption (1 = greedy)."),
        ground: str | None = typer.Option(None, "--ground", help="Referring phrase to find, e.g. 'the red vase'."),
        box_out: Path | None = typer.Option(None, "--box-out", help="Where to write the photo with the box drawn (default: <image>.box.png)."),
        match: str | None = typer.Option(None, "--match", help="Caption to score against the photo."),
        top_k: int = typer.Option(3, "--top-k", min=1, max=20, help="How many answers to list."),
        provider: str = typer.Option("cpu", "--provider", help="cpu | cuda | tensorrt"),
        threads: int = typer.Option(0, "--threads", help="ONNX Runtime threads (0 = default)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
        config: Path | None = typer.Option(None, "--config", help="edge_config.yaml (runtime limits)."),
    ) -> None:
        """Answer a question about a photo (and optionally caption it, find a phrase, score a caption)."""
        from rich.console import Console

        from edgefuse.artifacts import atomic_write_bytes
        from edgefuse.config import load_config

        console = Console()
        if not question and not (caption or ground or match):
            raise InputError("nothing to do", "give a question, or --caption / --ground PHRASE / --match CAPTION", code="EF746")
        if not image.is_file():
            raise InputError(f"image {image} not found", "check the path", code="EF747")
        rc = load_config(config).runtime
        data = image.read_bytes()
        result: dict[str, Any] = {"image": str(image)}
        with _pipeline(artifact, caption_artifact, provider, threads, caption, rc) as kiosk:
            if question:
                a = kiosk.ask(data, question, top_k=top_k)
                result["question"] = question
                result.update(a.to_dict())
            if caption:
                result["caption"] = kiosk.caption(data, num_beams=num_beams).text
            if ground:
                g = kiosk.ground(data, ground)
                out = box_out or image.with_name(image.stem + ".box.png")
                atomic_write_bytes(out, g.png)
                result["ground"] = {**g.to_dict(with_png=False), "drawn": str(out)}
            if match:
                result["match"] = {"caption": match, "score": kiosk.match(data, match)}
        if as_json:
            console.print_json(json.dumps(result))
            return
        if question:
            console.print(f"[bold]{result['answer']}[/bold]  ({result['confidence'] * 100:.1f}% sure)")
            others = ", ".join(f"{t['answer']} {t['confidence'] * 100:.1f}%" for t in result["top_k"][1:])
            if others:
                console.print(f"[dim]also: {others}[/dim]")
        if caption:
            console.print(f"caption: {result['caption']}")
        if ground:
            g = result["ground"]
            x, y, w, h = g["box_pixels"]
            console.print(f"'{ground}': box x={x} y={y} w={w} h={h} px -> {g['drawn']}")
        if match:
            console.print(f"match score: {result['match']['score']:.3f}")

    @app.command("serve")
    def serve(
        artifact: Path | None = typer.Option(None, "--artifact", "-a", help="Artifact folder (default: the shipped museum-dual model)."),
        caption_artifact: Path | None = typer.Option(None, "--caption-artifact", help="Captioning artifact folder (enables 'Describe'; "
                                                     "default: the cached museum-caption artifact when present)."),
        no_caption: bool = typer.Option(False, "--no-caption", help="Serve without captioning."),
        host: str | None = typer.Option(None, "--host", help="Bind address (default 127.0.0.1; 0.0.0.0 exposes the kiosk to the network)."),
        port: int | None = typer.Option(None, "--port", help="Port (default from edge_config.yaml, 8080)."),
        provider: str | None = typer.Option(None, "--provider", help="cpu | cuda | tensorrt"),
        threads: int | None = typer.Option(None, "--threads", help="ONNX Runtime threads (0 = default)."),
        queue_size: int | None = typer.Option(None, "--queue-size", help="Requests waiting before 503."),
        deadline_ms: int | None = typer.Option(None, "--deadline-ms", help="Per-request deadline."),
        max_batch: int | None = typer.Option(None, "--max-batch", help="Micro-batch size for /api/ask (1 = off)."),
        config: Path | None = typer.Option(None, "--config", help="edge_config.yaml (runtime section)."),
    ) -> None:
        """Start the web kiosk: touch page, JSON API, /healthz and /readyz."""
        from rich.console import Console

        from edgefuse.config import load_config
        from edgefuse.runtime.server import ServerSettings
        from edgefuse.runtime.server import serve as run_server

        console = Console()
        rc = load_config(config).runtime
        host = host or rc.host
        port = port or rc.port
        provider = provider or rc.provider
        threads = rc.threads if threads is None else threads
        overrides = {k: v for k, v in {"queue_size": queue_size, "deadline_ms": deadline_ms, "max_batch": max_batch}.items() if v}
        settings = ServerSettings.from_runtime(rc, **overrides)
        art = artifact or default_artifact()  # fail fast, before the server starts
        if caption_artifact is None and not no_caption:
            cached = cache_root() / "artifacts" / f"{DEFAULT_CAPTION_MODEL}-fp32"
            if (cached / "manifest.json").is_file() and not _stale(cached, DEFAULT_CAPTION_MODEL):
                caption_artifact = cached  # 'Describe' on when the captioning artifact is already there

        def factory() -> Any:
            return _pipeline(art, caption_artifact, provider, threads, False, rc)

        if host not in ("127.0.0.1", "localhost", "::1"):
            console.print(f"[yellow]binding {host}: the kiosk is reachable from the network[/yellow]")
        extra = f", captions {caption_artifact}" if caption_artifact else ""
        console.print(f"edgefuse kiosk on http://{host}:{port}/  (model {art}{extra}, provider {provider}; ready at /readyz)")
        run_server(factory, settings, host=host, port=port)
