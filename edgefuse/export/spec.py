"""ExportSpec: what one model family looks like at the ONNX boundary.

Optimum-style: one spec per family declares input names, dtypes, named dynamic axes,
example-input generators, output names and per-output tolerances. Specs are torch-free
(feeds are numpy) so that verification, the runtime and the docs can all read them.
A test fails if a registered family has no export test (tests/test_export.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgefuse.errors import ExportError, suggest

Dim = int | str  # an int is a fixed size, a str a named dynamic axis

# How an output is judged beyond tensor error: the task decision it drives.
CHECK_ARGMAX = "argmax"  # classification logits: same argmax (VQA answer, ITM decision)
CHECK_BOX = "box"  # (x, y, w, h) boxes: IoU >= Tolerance.min_iou
CHECK_NONE = "none"  # features / attention maps: tensor metrics only


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape (ints fixed, strings named dynamic axes) of one graph input/output."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        return cls(str(d["name"]), str(d["dtype"]), tuple(d.get("shape", [])))


@dataclass(frozen=True)
class Tolerance:
    """Allowed ONNX-vs-PyTorch gap for one output.

    Elementwise |onnx - torch| <= atol + rtol * |torch|, cosine >= min_cosine, and the task
    check: same argmax (ties closer than atol are not counted) or box IoU >= min_iou.
    """

    atol: float = 1e-4
    rtol: float = 1e-3
    min_cosine: float = 0.9999
    check: str = CHECK_NONE
    min_iou: float = 0.99


@dataclass(frozen=True)
class AxisRange:
    """Range a named dynamic axis may take (what the exporter declares and verifies)."""

    min: int
    max: int


Shape = dict[str, int]  # named axis -> size, e.g. {"batch": 3, "text_length": 16}
FeedFn = Callable[[Mapping[str, int], np.random.Generator], dict[str, np.ndarray]]


@dataclass
class ExportSpec:
    """The ONNX boundary of one model family (or of one bring-your-own model).

    `example_inputs(shape, rng)` makes a feed for any sizes of the named axes inside their
    ranges; `trace_shape` gives the sizes used to trace, and `verify_shapes` the others
    checked after export (they differ from the trace sizes, so shapes baked by the trace
    show up as errors).
    """

    family: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    example_inputs: FeedFn
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    axes: dict[str, AxisRange] = field(default_factory=dict)
    trace_shape: Shape = field(default_factory=lambda: {"batch": 2, "text_length": 11})
    verify_shapes: list[Shape] = field(default_factory=lambda: [{"batch": 1, "text_length": 4}, {"batch": 3, "text_length": 16},
                                                                {"batch": 8, "text_length": 24}])
    image_size: int | None = None
    max_text_length: int | None = None
    tasks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = [t.name for t in self.inputs] + [t.name for t in self.outputs]
        if len(set(names)) != len(names):
            raise ExportError(f"spec '{self.family}' repeats a tensor name: {names}", "give every input and output its own name", code="EF401")
        for t in self.inputs + self.outputs:
            for d in t.shape:
                if isinstance(d, str) and d not in self.axes:
                    self.axes[d] = AxisRange(1, 1 << 16)
        for name in self.tolerances:
            if name not in self.output_names:
                raise ExportError(f"spec '{self.family}' has a tolerance for unknown output '{name}'",
                                  suggest(name, self.output_names), code="EF401")

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def tolerance(self, output: str) -> Tolerance:
        return self.tolerances.get(output, Tolerance())

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """{input name: {axis index: axis name}} for the named dynamic axes of every input."""
        return {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in self.inputs}

    def with_outputs(self, outputs: Sequence[str]) -> ExportSpec:
        """The same spec restricted to (and ordered as) `outputs`; unknown names are refused."""
        by_name = {t.name: t for t in self.outputs}
        missing = [o for o in outputs if o not in by_name]
        if missing:
            raise ExportError(f"spec '{self.family}' has no output '{missing[0]}'", suggest(missing[0], by_name), code="EF401")
        return dataclasses.replace(self, outputs=[by_name[o] for o in outputs],
                                   tolerances={k: v for k, v in self.tolerances.items() if k in outputs})

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON summary (for manifests and `edgefuse inspect`)."""
        return {
            "family": self.family,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "axes": {k: dataclasses.asdict(v) for k, v in self.axes.items()},
            "tolerances": {k: dataclasses.asdict(v) for k, v in self.tolerances.items()},
            "trace_shape": dict(self.trace_shape),
            "verify_shapes": [dict(s) for s in self.verify_shapes],
        }


# ----------------------------------------------------------------------------- feeds
def padded_mask(batch: int, text_length: int, rng: np.random.Generator) -> np.ndarray:
    """int64 [batch, text_length] attention mask: row 0 full, the others padded at random.

    Every row keeps at least two real tokens ([CLS] and one word) so pooled outputs are defined.
    """
    mask = np.ones((batch, text_length), dtype=np.int64)
    for b in range(1, batch):
        keep = int(rng.integers(min(2, text_length), text_length + 1))
        mask[b, keep:] = 0
    return mask


def text_feed(batch: int, text_length: int, rng: np.random.Generator, vocab_size: int,
              cls_id: int = 1, pad_id: int = 0, first_word_id: int = 5) -> dict[str, np.ndarray]:
    """Random token ids with [CLS] first and pad ids where the (padded) mask is 0."""
    mask = padded_mask(batch, text_length, rng)
    ids = rng.integers(first_word_id, vocab_size, size=(batch, text_length)).astype(np.int64)
    ids[:, 0] = cls_id
    ids[mask == 0] = pad_id
    return {"input_ids": ids, "attention_mask": mask}


def image_feed(batch: int, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [batch, 3, S, S] in the normalised range (-1..1) of mean/std 0.5 preprocessing."""
    return rng.uniform(-1.0, 1.0, size=(batch, 3, image_size, image_size)).astype(np.float32)


def image_text_spec(family: str, image_size: int, vocab_size: int, max_text_length: int,
                    outputs: Sequence[TensorSpec], tasks: Sequence[str] = (),
                    tolerances: Mapping[str, Tolerance] | None = None,
                    cls_id: int = 1, pad_id: int = 0, first_word_id: int = 5, max_batch: int = 64) -> ExportSpec:
    """Spec for a `forward(pixel_values, input_ids, attention_mask) -> dict` fusion model."""
    s = int(image_size)

    def feed(shape: Mapping[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        out = {"pixel_values": image_feed(shape["batch"], s, rng)}
        out.update(text_feed(shape["batch"], shape["text_length"], rng, vocab_size, cls_id, pad_id, first_word_id))
        return out

    lengths = sorted({4, max(5, max_text_length // 2), max_text_length})
    trace_len = next(n for n in (11, 7, 13, 5, 9, 6) if n not in lengths and n <= max_text_length) if max_text_length >= 6 else max_text_length
    verify = [{"batch": 1, "text_length": lengths[0]}, {"batch": 3, "text_length": lengths[1]},
              {"batch": 8, "text_length": lengths[-1]}]
    return ExportSpec(
        family=family,
        inputs=[
            TensorSpec("pixel_values", "float32", ("batch", 3, s, s)),
            TensorSpec("input_ids", "int64", ("batch", "text_length")),
            TensorSpec("attention_mask", "int64", ("batch", "text_length")),
        ],
        outputs=list(outputs),
        example_inputs=feed,
        tolerances={k: v for k, v in (tolerances or TASK_TOLERANCES).items() if k in {o.name for o in outputs}},
        axes={"batch": AxisRange(1, max_batch), "text_length": AxisRange(2, max_text_length)},
        trace_shape={"batch": 2, "text_length": trace_len},
        verify_shapes=verify,
        image_size=s,
        max_text_length=max_text_length,
        tasks=list(tasks),
    )


# Output specs by task, per docs/interfaces.md.
def task_outputs(tasks: Sequence[str], num_answers: int | None = None, num_patches: int | None = None) -> list[TensorSpec]:
    out: list[TensorSpec] = []
    for task in tasks:
        if task == "vqa":
            out.append(TensorSpec("vqa_logits", "float32", ("batch", num_answers if num_answers else "num_answers")))
        elif task == "itm":
            out.append(TensorSpec("itm_logits", "float32", ("batch", 2)))
        elif task == "grounding":
            out.append(TensorSpec("box", "float32", ("batch", 4)))
            out.append(TensorSpec("grounding_attention", "float32", ("batch", num_patches if num_patches else "num_patches")))
        else:
            raise ExportError(f"no output spec for task '{task}'", suggest(task, ["vqa", "itm", "grounding"]), code="EF402")
    return out


TASK_TOLERANCES: dict[str, Tolerance] = {
    "vqa_logits": Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.9999, check=CHECK_ARGMAX),
    "itm_logits": Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.9999, check=CHECK_ARGMAX),
    "box": Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.9999, check=CHECK_BOX, min_iou=0.99),
    "grounding_attention": Tolerance(atol=1e-5, rtol=1e-3, min_cosine=0.9999),
}


# ----------------------------------------------------------------------------- captioning
def caption_encoder_spec(image_size: int, num_image_tokens: int, dim: int, max_batch: int = 64) -> ExportSpec:
    """`image_encoder.onnx`: pixel_values [batch, 3, S, S] -> image_tokens [batch, P, D]."""
    s = int(image_size)

    def feed(shape: Mapping[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"pixel_values": image_feed(shape["batch"], s, rng)}

    return ExportSpec(
        family="caption-encoder",
        inputs=[TensorSpec("pixel_values", "float32", ("batch", 3, s, s))],
        outputs=[TensorSpec("image_tokens", "float32", ("batch", num_image_tokens, dim))],
        example_inputs=feed,
        tolerances={"image_tokens": Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.99999)},
        axes={"batch": AxisRange(1, max_batch)},
        trace_shape={"batch": 2},
        verify_shapes=[{"batch": 1}, {"batch": 3}, {"batch": 8}],
        image_size=s,
        tasks=["captioning"],
    )


def caption_decoder_spec(vocab_size: int, num_layers: int, num_heads: int, head_dim: int, num_image_tokens: int,
                         dim: int, max_length: int, first_word_id: int = 5, max_batch: int = 64) -> ExportSpec:
    """`decoder.onnx`: one cached decoder step (stacked past keys/values, dynamic past length).

    input_ids [batch, new_length], image_tokens [batch, P, D], past_keys/past_values
    [layers, batch, heads, past_length, head_dim] -> logits [batch, new_length, vocab] and
    present_keys/present_values with past_length + new_length positions.
    """

    def feed(shape: Mapping[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        b, n, p = shape["batch"], shape["new_length"], shape["past_length"]
        kv = (num_layers, b, num_heads, p, head_dim)
        return {
            "input_ids": rng.integers(first_word_id, vocab_size, size=(b, n)).astype(np.int64),
            "image_tokens": rng.standard_normal((b, num_image_tokens, dim)).astype(np.float32),
            "past_keys": rng.standard_normal(kv).astype(np.float32),
            "past_values": rng.standard_normal(kv).astype(np.float32),
        }

    past = (num_layers, "batch", num_heads, "past_length", head_dim)
    present = (num_layers, "batch", num_heads, "total_length", head_dim)
    return ExportSpec(
        family="caption-decoder",
        inputs=[
            TensorSpec("input_ids", "int64", ("batch", "new_length")),
            TensorSpec("image_tokens", "float32", ("batch", num_image_tokens, dim)),
            TensorSpec("past_keys", "float32", past),
            TensorSpec("past_values", "float32", past),
        ],
        outputs=[
            TensorSpec("logits", "float32", ("batch", "new_length", vocab_size)),
            TensorSpec("present_keys", "float32", present),
            TensorSpec("present_values", "float32", present),
        ],
        example_inputs=feed,
        tolerances={
            "logits": Tolerance(atol=2e-4, rtol=1e-3, min_cosine=0.99999, check=CHECK_ARGMAX),
            "present_keys": Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.99999),
            "present_values": Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.99999),
        },
        axes={"batch": AxisRange(1, max_batch), "new_length": AxisRange(1, max_length),
              "past_length": AxisRange(0, max_length - 1), "total_length": AxisRange(1, max_length)},
        trace_shape={"batch": 2, "new_length": 3, "past_length": 5},
        verify_shapes=[{"batch": 1, "new_length": 1, "past_length": 0}, {"batch": 3, "new_length": 1, "past_length": 7},
                       {"batch": 8, "new_length": 4, "past_length": 0},
                       {"batch": 2, "new_length": 1, "past_length": max_length - 2}],
        max_text_length=max_length,
        tasks=["captioning"],
    )
