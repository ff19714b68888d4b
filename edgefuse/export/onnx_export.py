"""torch -> ONNX for one module and its ExportSpec (the dynamo exporter, opset >= 17).

The dynamo exporter with named dynamic Dims keeps batch and text length symbolic (the legacy
TorchScript exporter bakes the traced length into nn.MultiheadAttention's reshapes; see
NOTES.md). Export failures become ExportError naming the module and source line
(data-dependent control flow) or the ATen op (no ONNX translation).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgefuse.errors import ExportError
from edgefuse.export.spec import ExportSpec

log = logging.getLogger(__name__)

MIN_OPSET = 17


class OrderedOutputs(nn.Module):
    """Calls `inner` with the spec's inputs in order; returns its outputs as a tuple in spec order.

    Zoo models return dict[str, Tensor]; ONNX outputs are positional, so the order (and the
    names) come from the spec, never from dict iteration order.
    """

    def __init__(self, inner: nn.Module, output_names: Sequence[str], method: str = "forward") -> None:
        super().__init__()
        self.inner = inner
        self.output_names = list(output_names)
        self.method = method

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = getattr(self.inner, self.method)(*args)
        if isinstance(out, Mapping):
            return tuple(out[n] for n in self.output_names)
        if isinstance(out, torch.Tensor):
            return (out,)
        return tuple(out)


def to_torch(feed: Mapping[str, np.ndarray], names: Sequence[str]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(feed[n])) for n in names)


def torch_reference(module: nn.Module, spec: ExportSpec, method: str = "forward"):
    """A reference callable feed -> {output: ndarray} running `module` in PyTorch (no grad)."""
    wrapped = OrderedOutputs(module, spec.output_names, method).eval()

    def run(feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            outs = wrapped(*to_torch(feed, spec.input_names))
        return {n: o.detach().float().numpy() if o.is_floating_point() else o.numpy() for n, o in zip(spec.output_names, outs, strict=True)}

    return run


def dynamic_shapes(spec: ExportSpec) -> tuple[dict[int, Any], ...]:
    """torch.export Dims for the spec's named axes (in input order); one Dim per name, shared."""
    dims: dict[str, Any] = {}
    out: dict[str, dict[int, Any]] = {}
    for t in spec.inputs:
        axes: dict[int, Any] = {}
        for i, d in enumerate(t.shape):
            if isinstance(d, str):
                if d not in dims:
                    r = spec.axes[d]
                    dims[d] = torch.export.Dim(d, min=max(r.min, 0), max=r.max)
                axes[i] = dims[d]
        out[t.name] = axes
    return tuple(out[n] for n in spec.input_names)


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress prints and known-noise warnings (logged at debug)."""
    noisy = [logging.getLogger(n) for n in ("torch.onnx._internal.exporter._registration", "torch.onnx", "torch.export",
                                              "torch._export", "torch.fx.experimental.symbolic_shapes", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in noisy]
    buf = io.StringIO()
    try:
        for lg in noisy:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lvl in zip(noisy, levels, strict=True):
            lg.setLevel(lvl)
        if buf.getvalue():
            log.debug("exporter output:\n%s", buf.getvalue()[-4000:])


def _module_at(root: nn.Module, filename: str, line: int) -> str | None:
    """Name the submodule whose forward contains filename:line ("FusionLayer ('fusion.0')")."""
    for name, mod in root.named_modules():
        fwd = getattr(type(mod), "forward", None)
        code = getattr(fwd, "__code__", None)
        if code is None or code.co_filename != filename:
            continue
        try:
            lines, start = inspect.getsourcelines(fwd)
        except (OSError, TypeError):
            continue
        if start <= line < start + len(lines):
            label = name.removeprefix("inner.").removeprefix("inner") or "<root>"
            return f"{type(mod).__name__} ('{label}')"
    return None


def explain_export_error(e: BaseException, module: nn.Module) -> ExportError:
    """Turn a torch.export / ONNX translation failure into one ExportError line."""
    text = str(e)
    causes = []
    c: BaseException | None = e
    while c is not None and len(causes) < 8:
        causes.append(type(c).__name__)
        c = c.__cause__ or c.__context__
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\w+)\n\s*(.*)', text)
    where = ""
    if frames:
        fname, line, func, code = frames[-1]
        mod = _module_at(module, fname, int(line))
        where = f" in {mod or func} at {Path(fname).name}:{line} `{code.strip()[:80]}`"
    op = re.search(r"No ONNX function found for <OpOverload\(op='([^']+)'", text)
    if op:
        return ExportError(f"unsupported op {op.group(1)}: no ONNX translation at this opset{where}",
                           "replace the op in the model, or register a custom translation", code="EF404")
    if "data-dependent" in text or "GuardOnDataDependent" in " ".join(causes):
        return ExportError(f"data-dependent control flow{where}",
                           "replace Python if/loops on tensor values with torch.where / masks", code="EF403")
    if "Constraints violated" in text or "specialized" in text.lower():
        m = re.search(r"Constraints violated \(([^)]*)\)", text)
        axes = m.group(1) if m else "a dynamic axis"
        return ExportError(f"the model fixes dynamic axis {axes}{where}",
                           "derive sizes from the input's shape instead of constants", code="EF405")
    summary = re.search(r"## Exception summary\s+(.+)", text)
    line = (summary.group(1) if summary else text.strip().splitlines()[0] if text.strip() else type(e).__name__)
    return ExportError(f"export failed{where}: {line[:300]}", "run with -v for the exporter's log", code="EF400")


def export_onnx(module: nn.Module, spec: ExportSpec, path: str | Path, opset: int = 18, method: str = "forward",
                seed: int = 0) -> Path:
    """Export `module` (its `method`) to `path` with the spec's names and named dynamic axes.

    Traces at `spec.trace_shape` with the dynamo exporter, runs its graph optimizer
    (constant folding, dead-node removal) and checks the saved model with onnx.checker.
    """
    import onnx

    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old", f"use opset >= {MIN_OPSET} (LayerNormalization stays one node)", code="EF406")
    path = Path(path)
    feed = spec.example_inputs(spec.trace_shape, np.random.default_rng(seed))
    args = to_torch(feed, spec.input_names)
    wrapped = OrderedOutputs(module, spec.output_names, method).eval()
    try:
        with quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                wrapped, args, dynamo=True, opset_version=opset, input_names=spec.input_names,
                output_names=spec.output_names, dynamic_shapes=(dynamic_shapes(spec),), optimize=True, verbose=False,
                external_data=False,
            )
    except ExportError:
        raise
    except Exception as e:  # torch.export / ONNX translation errors have many types
        raise explain_export_error(e, wrapped) from e
    if program is None:
        raise ExportError("the exporter returned no program", "check the torch version", code="EF400")
    with quiet_exporter():
        program.save(str(path), external_data=False)
    try:
        onnx.checker.check_model(str(path), full_check=False)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"exported graph is not valid ONNX: {str(e).splitlines()[0][:200]}", "report this with the model", code="EF407") from e
    return path
