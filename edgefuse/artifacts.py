"""Artifacts on disk: atomic writes, hashing, manifests.

Every artifact is a file plus a JSON manifest beside it. Nothing half-written is ever left
where a user would take it for a result: files go to a temp file in the same folder, are
fsynced, then renamed; folders are built under a temp name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgefuse.errors import ArtifactError

MANIFEST_NAME = "manifest.json"


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write bytes to `path` via temp file + fsync + rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise ArtifactError(f"cannot write {path}: {e.strerror or e}", "choose a writable folder") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextmanager
def atomic_output_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside `path` for a tool that writes files itself; rename on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def staged_dir(final: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Build an output folder under a hidden temp name; move it into place only on success.

    An existing `final` is refused unless `overwrite`; an exception leaves `final` untouched.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise ArtifactError(f"output {final} already exists", "pass --overwrite to replace it", code="EF601")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    except OSError as e:
        raise ArtifactError(f"cannot write to {final.parent}: {e.strerror or e}", "choose a writable folder", code="EF602") from e
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def tool_versions(*modules: str) -> dict[str, str]:
    """Versions of the named modules that are importable (for manifests)."""
    from importlib import metadata

    out = {"python": platform.python_version(), "edgefuse": _edgefuse_version()}
    for name in modules:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _edgefuse_version() -> str:
    from edgefuse import __version__

    return __version__


def write_manifest(folder: str | os.PathLike[str], manifest: dict[str, Any], name: str = MANIFEST_NAME) -> Path:
    return atomic_write_json(Path(folder) / name, manifest)


def read_json(path: str | os.PathLike[str], what: str, hint: str = "re-run the stage that wrote it",
              missing_code: str = "EF605") -> Any:
    """Read one JSON file of an artifact; a missing or unparsable file is a typed ArtifactError."""
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"no {what} at {p}", hint, code=missing_code)
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{what} {p} is not valid JSON: {e}", hint, code="EF604") from e


def read_manifest(folder_or_file: str | os.PathLike[str], name: str = MANIFEST_NAME) -> dict[str, Any]:
    """Read a manifest from a folder (or a manifest file path)."""
    p = Path(folder_or_file)
    if p.is_dir():
        p = p / name
    return read_json(p, "manifest", "point at a folder written by `edgefuse export` or `edgefuse quantize`", missing_code="EF603")
