"""Calibration data for quantization (torch-free): sources, deterministic sampling, the
kiosk's preprocessing as the transform, a content-keyed statistics cache, a coverage summary."""

from edgefuse.calibration.cache import StatsCache, cache_key
from edgefuse.calibration.dataset import CalibrationDataset, CalibrationSet, PairTransform, build_calibration, check_input_names
from edgefuse.calibration.sources import CalibrationPair, pairs_hash, sample_pairs, source_pairs

__all__ = ["CalibrationDataset", "CalibrationPair", "CalibrationSet", "PairTransform", "StatsCache", "build_calibration",
           "cache_key", "check_input_names", "pairs_hash", "sample_pairs", "source_pairs"]
