"""How a calibration pair becomes model input, kept apart from where pairs come from (NNCF's
`Dataset(source, transform)`), plus `build_calibration`, the one call the quantizers use.

The transform is the kiosk's own `Preprocessor` (same resize, normalisation, tokenizer), so a
model is calibrated on exactly the tensors it will see in service.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgefuse.calibration.coverage import coverage_summary
from edgefuse.calibration.sources import CalibrationPair, pairs_hash, sample_pairs, source_pairs
from edgefuse.errors import CalibrationError, DataError

log = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]
MODEL_INPUTS = ("pixel_values", "input_ids", "attention_mask")


class PairTransform:
    """Pairs -> one feed {pixel_values, input_ids, attention_mask} through the kiosk preprocessing."""

    def __init__(self, preprocess_config: Any = None, tokenizer: Any = None) -> None:
        from edgefuse.data.preprocess import Preprocessor

        self.preprocessor = Preprocessor(preprocess_config, tokenizer)

    def fingerprint(self) -> str:
        return self.preprocessor.fingerprint()

    def __call__(self, pairs: Sequence[CalibrationPair]) -> Feed:
        try:
            return self.preprocessor([p.image for p in pairs], [p.text for p in pairs])
        except DataError as e:
            where = pairs[0].where if len(pairs) == 1 else f"{len(pairs)} pairs from {pairs[0].where}"
            raise CalibrationError(f"bad calibration sample ({where}): {e.message}", e.hint, code="EF505") from e


class CalibrationDataset:
    """NNCF-style dataset: `source` (pairs) + `transform` (pairs -> feed), batched."""

    def __init__(self, pairs: Sequence[CalibrationPair], transform: Callable[[Sequence[CalibrationPair]], Feed],
                 batch_size: int = 1) -> None:
        self.pairs = list(pairs)
        self.transform = transform
        self.batch_size = batch_size

    def __len__(self) -> int:
        return (len(self.pairs) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[Feed]:
        for i in range(0, len(self.pairs), self.batch_size):
            yield self.transform(self.pairs[i : i + self.batch_size])


@dataclass
class CalibrationSet:
    """The prepared calibration data and what identifies it (for the statistics cache)."""

    pairs: list[CalibrationPair]
    feeds: list[Feed]
    data_hash: str
    preprocess_fingerprint: str
    source: str
    seed: int
    requested: int
    coverage: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        return {"data_sha256": self.data_hash, "preprocess": self.preprocess_fingerprint, "pairs": len(self.pairs),
                "seed": self.seed, "source": self.source}


def check_input_names(feed_names: Sequence[str], model_inputs: Sequence[str]) -> None:
    """The model must take exactly the inputs calibration produces (a renamed input is an error)."""
    missing = [n for n in model_inputs if n not in feed_names]
    extra = [n for n in feed_names if n not in model_inputs]
    if missing or extra:
        raise CalibrationError(
            f"model inputs {list(model_inputs)} do not match calibration inputs {list(feed_names)}",
            f"calibration feeds {', '.join(MODEL_INPUTS)} (docs/interfaces.md); "
            f"missing in data: {missing or 'none'}, unknown to the model: {extra or 'none'}",
            code="EF506",
        )


def build_calibration(source: str | os.PathLike[str], num_samples: int, seed: int = 0, preprocess_config: Any = None,
                      tokenizer: Any = None, model_inputs: Sequence[str] | None = None, batch_size: int = 1) -> CalibrationSet:
    """Sample, preprocess and summarise calibration data (deterministic for a source + seed)."""
    if model_inputs is not None:
        check_input_names(MODEL_INPUTS, model_inputs)
    pairs = sample_pairs(source_pairs(source, num_samples), num_samples, seed)
    transform = PairTransform(preprocess_config, tokenizer)
    feeds = list(CalibrationDataset(pairs, transform, batch_size))
    cset = CalibrationSet(pairs, feeds, pairs_hash(pairs), transform.fingerprint(), str(source), seed, num_samples)
    cset.coverage = coverage_summary(pairs, feeds, requested=num_samples)
    log.info("calibration: %d pairs from %s (data %s)", len(pairs), source, cset.data_hash[:12])
    return cset
