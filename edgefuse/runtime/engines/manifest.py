"""Engine manifests: what an engine folder holds, and the checks made before deserializing.

TensorRT treats a serialized engine as executable code tied to one library version and a
set of GPUs, so the runner never hands bytes to `deserialize_cuda_engine` until the
manifest beside them says they fit: every engine file's sha256 (a truncated or edited file
is refused), the TensorRT flavour and exact version, and the GPU's compute capability.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgefuse.artifacts import MANIFEST_NAME, read_manifest, sha256_bytes
from edgefuse.errors import EngineError

log = logging.getLogger(__name__)

ENGINE_KIND = "engine"
ENGINE_MANIFEST_VERSION = 1
REQUIRED_KEYS = ("kind", "engine_manifest_version", "flavour", "tensorrt_version", "compute_capability", "engines", "inputs",
                 "outputs", "profiles", "source", "build")


def read_engine_manifest(folder_or_file: str | Path) -> tuple[Path, dict[str, Any]]:
    """(engine folder, manifest) for an engine folder or one of its engine files."""
    p = Path(folder_or_file)
    folder = p if p.is_dir() else p.parent
    if not (folder / MANIFEST_NAME).is_file():
        raise EngineError(f"no engine manifest beside {p}", "engines are loaded only with the manifest `edgefuse build` writes; "
                          "rebuild the engine", code="EF824")
    manifest = read_manifest(folder)
    check_manifest_schema(manifest, folder)
    return folder, manifest


def check_manifest_schema(manifest: Mapping[str, Any], where: str | Path = "manifest") -> None:
    if manifest.get("kind") != ENGINE_KIND:
        raise EngineError(f"{where} is not an engine manifest (kind={manifest.get('kind')!r})", "point at a folder written by `edgefuse build`",
                          code="EF824")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise EngineError(f"engine manifest in {where} lacks {', '.join(missing)}", "rebuild the engine with this edgefuse", code="EF824")
    if manifest["engine_manifest_version"] != ENGINE_MANIFEST_VERSION:
        raise EngineError(f"engine manifest version {manifest['engine_manifest_version']} is not supported",
                          f"this edgefuse reads version {ENGINE_MANIFEST_VERSION}; rebuild the engine", code="EF824")


def read_engine_bytes(folder: Path, entry: Mapping[str, Any]) -> bytes:
    """The engine file's bytes, refused unless size and sha256 match the manifest."""
    path = folder / str(entry["file"])
    if not path.is_file():
        raise EngineError(f"engine file {path} is missing", "rebuild with `edgefuse build`", code="EF823")
    data = path.read_bytes()
    if len(data) != int(entry["bytes"]) or sha256_bytes(data) != entry["sha256"]:
        raise EngineError(f"engine file {path.name} does not match its manifest ({len(data)} bytes, expected {entry['bytes']}): "
                          "truncated or modified", "copy the engine folder again or rebuild it with `edgefuse build`", code="EF823")
    return data


def check_library(manifest: Mapping[str, Any], running_version: str) -> None:
    """An engine runs only on the exact TensorRT version that built it."""
    built = str(manifest["tensorrt_version"])
    if built != running_version:
        raise EngineError(f"engine was built with {manifest['flavour']} {built} but this machine runs {running_version}",
                          "rebuild the engine here with `edgefuse build` (engines are tied to one TensorRT version)", code="EF821")


def check_gpu(manifest: Mapping[str, Any], device_cc: str) -> None:
    """Refuse a GPU whose compute capability is not among the engine's targets."""
    targets = [str(c) for c in manifest["compute_capability"]]
    if manifest.get("hardware_compatibility") == "AMPERE_PLUS":
        if float(device_cc) >= 8.0:
            return
    if device_cc not in targets:
        raise EngineError(f"engine targets compute capability {', '.join(targets)} but this GPU is {device_cc}",
                          "build for this GPU: add its compute capability to the target in edge_config.yaml and rebuild "
                          "(see docs/hardware.md)", code="EF822")


def verify_for_this_machine(folder: Path, manifest: Mapping[str, Any], device: int = 0,
                            entries: list[Mapping[str, Any]] | None = None) -> tuple[Any, dict[str, bytes]]:
    """All checks before deserializing: file hashes, library flavour + version, GPU. Returns (trt module, engine bytes)."""
    from edgefuse.runtime.engines import cuda
    from edgefuse.runtime.engines.flavours import get_flavour, import_trt, library_version

    blobs = {str(e["name"]): read_engine_bytes(folder, e) for e in (entries if entries is not None else manifest["engines"])}
    trt = import_trt(get_flavour(str(manifest["flavour"])))
    check_library(manifest, library_version(trt))
    if cuda.device_count() < 1:
        raise EngineError("no CUDA GPU found on this machine", "engines run on an NVIDIA GPU; use the ONNX artifact on CPU "
                          "(see docs/hardware.md)", code="EF842")
    check_gpu(manifest, cuda.compute_capability(device))
    return trt, blobs
