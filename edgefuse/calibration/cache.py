"""Cache of calibration statistics keyed by content, never by file name.

The key hashes the calibration data's content, the preprocessing fingerprint, the model's
ONNX sha256 and the statistics recipe (method, percentile, bins, tool versions): a changed
model, data set or preprocessing can never pick up stale ranges (Ultralytics keys by name).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from edgefuse.artifacts import atomic_write_json

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def cache_key(data_sha256: str, preprocess_fingerprint: str, model_sha256: str, recipe: dict[str, Any]) -> str:
    payload = json.dumps({"v": CACHE_VERSION, "data": data_sha256, "preprocess": preprocess_fingerprint,
                          "model": model_sha256, "recipe": recipe}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class StatsCache:
    """JSON files `<dir>/<key>.json`; a `None` dir disables caching."""

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.dir = Path(directory) if directory is not None else None

    def path(self, key: str) -> Path | None:
        return None if self.dir is None else self.dir / f"calib-{key[:32]}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        p = self.path(key)
        if p is None or not p.is_file():
            return None
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            log.warning("ignoring unreadable calibration cache %s", p)
            return None
        if data.get("key") != key or data.get("version") != CACHE_VERSION:
            return None
        log.info("calibration statistics from cache %s", p)
        return data.get("stats")

    def put(self, key: str, stats: dict[str, Any], identity: dict[str, Any]) -> Path | None:
        p = self.path(key)
        if p is None:
            return None
        try:
            atomic_write_json(p, {"version": CACHE_VERSION, "key": key, "identity": identity, "stats": stats})
        except Exception as e:  # a cache that cannot be written must not fail the run
            log.warning("could not write calibration cache %s: %s", p, e)
            return None
        return p
