"""Shared session-scoped fixtures. Export's fixtures come first: each artifact is built ONCE
per test session (shipped weights when they exist, else random init) and shared by every
room's tests. Other rooms append their fixtures below the marked line."""

from __future__ import annotations

from pathlib import Path

import pytest


def _export_once(tmp_path_factory: pytest.TempPathFactory, model: str):
    import torch

    from edgefuse.export.exporter import export_model

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("artifacts") / f"{model}-fp32"
    return export_model(model, out, created_by=f"tests/conftest.py ({model})")


@pytest.fixture(scope="session")
def fp32_export(tmp_path_factory: pytest.TempPathFactory):
    """ExportResult of museum-dual (the default model): folder, manifest, measured checks."""
    return _export_once(tmp_path_factory, "museum-dual")


@pytest.fixture(scope="session")
def fp32_artifact(fp32_export) -> Path:
    """Folder of the verified FP32 museum-dual artifact (model.onnx, manifest, tokenizer, answers)."""
    return fp32_export.folder


@pytest.fixture(scope="session")
def caption_export(tmp_path_factory: pytest.TempPathFactory):
    """ExportResult of museum-caption (image_encoder.onnx + decoder.onnx + generation settings)."""
    return _export_once(tmp_path_factory, "museum-caption")


@pytest.fixture(scope="session")
def caption_artifact(caption_export) -> Path:
    """Folder of the verified FP32 museum-caption artifact."""
    return caption_export.folder


# ---- fixtures of other rooms go below this line ------------------------------------------------
