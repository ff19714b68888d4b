"""Benchmark worker: one process per variant, driven over stdin/stdout with JSON lines.

Why a process per variant: several ONNX Runtime sessions and torch in one process fight for
threads and inflated eager latency 2-3x here (NOTES.md), and a process's peak RSS is that
variant's memory alone. The parent keeps every worker alive and asks them in turn for one
pass each (interleaved), so slow drift of the machine hits all variants alike.

Protocol: the parent starts `python -m edgefuse.bench.worker '<spec json>'`; the worker
loads the variant and answers {"ready": ...}; then for each {"batch", "text_length", "runs",
"warmup"} line it answers {"latencies_ms": [...], "peak_rss_mb": ...}; {"quit": true} ends it.
Errors come back as {"error": {code, message, hint}}.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def rss_mb() -> float:
    """Current resident set size (MB) from /proc (peak comes from getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def make_feed(specs: list[dict[str, Any]], batch: int, text_length: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic random inputs for the interface (pixel_values / input_ids / attention_mask and alike)."""
    rng = np.random.default_rng(seed)
    axes = {"batch": batch, "text_length": text_length}
    feed = {}
    for spec in specs:
        shape = [axes.get(d, 1) if isinstance(d, str) or d is None else int(d) for d in spec["shape"]]
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f":
            feed[spec["name"]] = rng.standard_normal(shape).astype(dtype)
        elif "mask" in spec["name"]:
            m = np.ones(shape, dtype)
            if m.ndim == 2 and m.shape[1] > 2:
                m[:, -(m.shape[1] // 4):] = 0  # some padding, like real questions
            feed[spec["name"]] = m
        else:
            feed[spec["name"]] = rng.integers(1, max(2, vocab), shape).astype(dtype)
    return feed


def _vocab(folder: Path) -> int:
    tok = folder / "tokenizer.json"
    if tok.is_file():
        try:
            return max(2, len(json.loads(tok.read_text())["model"]["vocab"]))
        except (KeyError, ValueError, TypeError):
            pass
    return 32


def load_variant(spec: dict[str, Any]) -> tuple[Callable[[int, int], Callable[[], Any]], dict[str, Any]]:
    """Returns (make_call(batch, text_length) -> zero-arg callable running one inference, info)."""
    threads = int(spec.get("threads") or 0)
    if spec["kind"] == "torch":
        import torch

        from edgefuse.models.zoo import get_entry, load_model

        if threads:
            torch.set_num_threads(threads)
        model = load_model(spec["model"], pretrained=bool(spec.get("pretrained", True)))
        entry = get_entry(spec["model"])
        cfg = dict(entry.config)
        size = int(cfg.get("image_size", 64))
        vocab = int(cfg.get("vocab_size", 32))
        specs = [{"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, size, size]},
                 {"name": "input_ids", "dtype": "int64", "shape": ["batch", "text_length"]},
                 {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "text_length"]}]

        def make_call_torch(batch: int, text_length: int) -> Callable[[], Any]:
            feed = {k: torch.from_numpy(v) for k, v in make_feed(specs, batch, text_length, vocab).items()}

            def call() -> Any:
                with torch.inference_mode():
                    return model(feed["pixel_values"], feed["input_ids"], feed["attention_mask"])
            return call

        return make_call_torch, {"backend": f"torch {torch.__version__} eager", "threads": torch.get_num_threads()}

    from edgefuse.runtime.runners import OrtRunner, open_runner

    path = Path(spec["path"])
    runner = open_runner(path, provider=spec.get("provider", "cpu"))
    if isinstance(runner, OrtRunner) and threads:
        runner.threads = threads  # intra-op threads, read when the session is created
    runner.activate()
    folder = path if path.is_dir() else path.parent
    vocab = _vocab(folder)
    specs = [s.to_dict() for s in runner.input_specs]

    def make_call_runner(batch: int, text_length: int) -> Callable[[], Any]:
        feed = make_feed(specs, batch, text_length, vocab)

        def call() -> Any:
            return runner.infer(feed)
        return call

    info = {"backend": runner.name, "threads": threads or None}
    providers = getattr(runner, "providers", None)
    if providers is not None:
        try:
            info["providers"] = list(providers)
        except Exception:  # noqa: BLE001 - informational only
            pass
    return make_call_runner, info


def measure(call: Callable[[], Any], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def main(argv: list[str] | None = None) -> int:
    from edgefuse.errors import EdgeFuseError

    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(argv[0])
    # The protocol gets a private copy of stdout; fd 1 then points at stderr, so prints from
    # Python or native libraries (ONNX Runtime, TensorRT) cannot corrupt it.
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    rss0 = rss_mb()
    t0 = time.perf_counter()
    try:
        make_call, info = load_variant(spec)
    except EdgeFuseError as e:
        send({"error": e.to_dict()})
        return 2
    except Exception as e:  # noqa: BLE001 - report any load failure to the parent as data
        send({"error": {"code": "EF960", "message": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300],
                        "hint": "check the variant loads on its own (edgefuse ask / python -c)"}})
        return 2
    send({"ready": True, "load_s": time.perf_counter() - t0, "rss_before_load_mb": rss0, "rss_after_load_mb": rss_mb(), **info})
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("quit"):
            break
        try:
            call = make_call(int(req["batch"]), int(req["text_length"]))
            lat = measure(call, int(req["runs"]), int(req["warmup"]))
        except EdgeFuseError as e:
            send({"error": e.to_dict()})
            continue
        except Exception as e:  # noqa: BLE001
            send({"error": {"code": "EF961", "message": f"{type(e).__name__}: {e}"[:300], "hint": "see the variant's own error"}})
            continue
        send({"latencies_ms": lat, "peak_rss_mb": peak_rss_mb(), "rss_mb": rss_mb()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
