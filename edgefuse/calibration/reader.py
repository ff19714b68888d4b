"""ONNX Runtime's one-method calibration reader over prepared feeds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from onnxruntime.quantization.calibrate import CalibrationDataReader


class FeedReader(CalibrationDataReader):
    """Yields each feed once per pass; `rewind()` starts again (ORT's calibrators call get_next)."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._feeds = list(feeds)
        self._pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= len(self._feeds):
            return None
        self._pos += 1
        return self._feeds[self._pos - 1]

    def rewind(self) -> None:
        self._pos = 0

    def __len__(self) -> int:
        return len(self._feeds)
