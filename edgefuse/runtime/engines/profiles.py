"""Optimization profiles: min/opt/max shapes per engine input, from a target's named axes.

The artifact manifest names each dynamic axis (`batch`, `text_length`); the target gives
min/opt/max per axis name. Every input that shares an axis gets the same numbers, so the
profile is self-consistent by construction (TensorRT refuses "kOPT values are not
self-consistent" otherwise). The same shapes, recorded in the engine manifest, let the runner
refuse out-of-profile input with a clear error before it reaches TensorRT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgefuse.errors import EngineError, InputError, TargetError

ProfileShapes = dict[str, dict[str, list[int]]]  # input name -> {"min": [...], "opt": [...], "max": [...]}


class EngineShapeError(InputError, EngineError):
    """Input shape outside the engine's optimization profile (an input error for the kiosk)."""

    code = "EF831"


def axis_ranges(target_profiles: Mapping[str, Any]) -> dict[str, tuple[int, int, int]]:
    """{axis: (min, opt, max)} from TargetConfig.profiles (ProfileShape objects or dicts/tuples)."""
    out = {}
    for axis, p in target_profiles.items():
        if isinstance(p, Mapping):
            out[axis] = (int(p["min"]), int(p["opt"]), int(p["max"]))
        elif isinstance(p, Sequence):
            out[axis] = (int(p[0]), int(p[1]), int(p[2]))
        else:
            out[axis] = (int(p.min), int(p.opt), int(p.max))
    return out


def profile_shapes(
    inputs: Sequence[Mapping[str, Any]],
    ranges: Mapping[str, tuple[int, int, int]],
    target: str,
    max_text_length: int | None = None,
    dla: bool = False,
) -> ProfileShapes:
    """Per-input min/opt/max shapes; inputs are manifest specs {"name", "dtype", "shape"}.

    Refuses a dynamic axis the target gives no range for, a text_length range beyond what the
    model was exported for, and (on DLA) any range where min, opt and max differ.
    """
    if max_text_length is not None and "text_length" in ranges and ranges["text_length"][2] > max_text_length:
        raise TargetError(f"target {target}: text_length max {ranges['text_length'][2]} exceeds the model's max_text_length {max_text_length}",
                          f"set targets.{target}.profiles.text_length.max <= {max_text_length}", code="EF816")
    shapes: ProfileShapes = {}
    for spec in inputs:
        name = str(spec["name"])
        dims: dict[str, list[int]] = {"min": [], "opt": [], "max": []}
        for i, d in enumerate(spec["shape"]):
            if isinstance(d, int) and d >= 0:
                for k in dims:
                    dims[k].append(d)
                continue
            if not isinstance(d, str) or not d:
                raise TargetError(f"input '{name}' dim {i} is dynamic without an axis name",
                                  "re-export with named dynamic axes (batch, text_length)", code="EF815")
            if d not in ranges:
                raise TargetError(f"target {target} has no profile for dynamic axis '{d}' of input '{name}'",
                                  f"add targets.{target}.profiles.{d}: {{min, opt, max}} to edge_config.yaml", code="EF815")
            lo, opt, hi = ranges[d]
            if dla and not (lo == opt == hi):
                raise TargetError(f"target {target} runs on DLA, which needs static shapes, but axis '{d}' is {lo}/{opt}/{hi}",
                                  f"DLA needs min = opt = max: set targets.{target}.profiles.{d} to one size, or drop dla_core",
                                  code="EF817")
            dims["min"].append(lo)
            dims["opt"].append(opt)
            dims["max"].append(hi)
        shapes[name] = dims
    return shapes


def is_dynamic(shapes: ProfileShapes) -> bool:
    return any(v["min"] != v["max"] for v in shapes.values())


def check_in_profile(feed_shapes: Mapping[str, Sequence[int]], shapes: ProfileShapes, engine: str = "engine") -> None:
    """Raise EngineShapeError when any input shape lies outside the profile's [min, max]."""
    for name, got in feed_shapes.items():
        prof = shapes.get(name)
        if prof is None:
            continue
        got = [int(x) for x in got]
        if len(got) != len(prof["min"]):
            raise EngineShapeError(f"{engine}: input '{name}' has rank {len(got)}, the profile has rank {len(prof['min'])}",
                                   "check the input against the engine manifest", code="EF831")
        for i, (g, lo, hi) in enumerate(zip(got, prof["min"], prof["max"], strict=True)):
            if not lo <= g <= hi:
                raise EngineShapeError(f"{engine}: input '{name}' dim {i} is {g}, outside the engine profile [{lo}, {hi}] (shape {got})",
                                       "split the batch / truncate the text, or rebuild with a wider profile in edge_config.yaml",
                                       code="EF831")
