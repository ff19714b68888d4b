"""Verification after export: ONNX Runtime against PyTorch, fatal on a miss.

Runs both at shapes other than the trace shape (so shapes baked by the trace show up) and on
real museum inputs where the caller passes them, and compares per output: max abs and
relative error, cosine, and the task decision (same argmax, box IoU). A miss raises
VerificationError naming the output and the shape; the exporter then publishes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefuse.errors import VerificationError
from edgefuse.export.spec import CHECK_ARGMAX, CHECK_BOX, ExportSpec, Tolerance

log = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]
Reference = Callable[[Feed], Mapping[str, np.ndarray]]


@dataclass
class Case:
    """One verification input: a name (e.g. 'random b3 t16', 'museum b8') and its feed."""

    name: str
    feed: Feed

    @property
    def shape(self) -> str:
        return ", ".join(f"{k}{list(v.shape)}" for k, v in self.feed.items())


@dataclass
class OutputCheck:
    """Measured gap for one output on one case."""

    case: str
    output: str
    shape: list[int]
    max_abs: float
    max_rel: float
    cosine: float
    agreement: float | None  # fraction of rows with the same task decision (None: no task check)
    min_iou: float | None
    ok: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of (x, y, w, h) boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    same = np.all(np.abs(a - b) <= 1e-12, axis=1)  # degenerate identical boxes agree
    return np.where(union > 0, inter / np.maximum(union, 1e-12), same.astype(np.float64))


def compare_output(name: str, ref: np.ndarray, got: np.ndarray, tol: Tolerance, case: str = "") -> OutputCheck:
    """Compare one ONNX output with the PyTorch reference under `tol`."""
    ref = np.asarray(ref)
    got = np.asarray(got)
    if ref.shape != got.shape:
        return OutputCheck(case, name, list(got.shape), float("inf"), float("inf"), 0.0, None, None, False,
                           f"shape {list(got.shape)} != PyTorch {list(ref.shape)}")
    r = ref.astype(np.float64)
    g = got.astype(np.float64)
    if not np.all(np.isfinite(g) == np.isfinite(r)):
        return OutputCheck(case, name, list(ref.shape), float("inf"), float("inf"), 0.0, None, None, False, "non-finite values differ")
    fin = np.isfinite(r)
    diff = np.abs(np.where(fin, g - r, 0.0))
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(np.where(fin, r, 0.0)).max()) if diff.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    rf, gf = np.where(fin, r, 0.0).ravel(), np.where(fin, g, 0.0).ravel()
    nr, ng = float(np.linalg.norm(rf)), float(np.linalg.norm(gf))
    cosine = float(rf @ gf / (nr * ng)) if nr > 0 and ng > 0 else (1.0 if nr == ng else 0.0)
    within = bool(np.all(diff <= tol.atol + tol.rtol * np.abs(np.where(fin, r, 0.0))))
    reasons = []
    if not within:
        reasons.append(f"max abs error {max_abs:.3g} > atol {tol.atol:g} + rtol {tol.rtol:g}*|ref|")
    if cosine < tol.min_cosine:
        reasons.append(f"cosine {cosine:.6f} < {tol.min_cosine}")
    agreement = min_iou = None
    if tol.check == CHECK_ARGMAX and r.ndim >= 2:
        r2, g2 = r.reshape(-1, r.shape[-1]), g.reshape(-1, g.shape[-1])
        top_r, top_g = r2.argmax(-1), g2.argmax(-1)
        rows = np.arange(len(r2))
        # a flip between two logits PyTorch itself scores within atol of each other is a tie, not a miss
        margin = r2[rows, top_r] - r2[rows, top_g]
        agree = (top_r == top_g) | (margin <= tol.atol)
        agreement = float(agree.mean()) if len(agree) else 1.0
        if not agree.all():
            reasons.append(f"decision differs on {int((~agree).sum())} of {len(agree)} rows")
    elif tol.check == CHECK_BOX:
        ious = iou_xywh(r, g)
        min_iou = float(ious.min()) if ious.size else 1.0
        agreement = float((ious >= tol.min_iou).mean()) if ious.size else 1.0
        if min_iou < tol.min_iou:
            reasons.append(f"box IoU {min_iou:.4f} < {tol.min_iou}")
    return OutputCheck(case, name, list(ref.shape), max_abs, max_rel, cosine, agreement, min_iou, not reasons, "; ".join(reasons))


def make_cases(spec: ExportSpec, seed: int = 0, extra: Sequence[Case] = ()) -> list[Case]:
    """Random feeds at every verify shape (never the trace shape) plus the caller's real ones."""
    rng = np.random.default_rng(seed)
    cases = []
    for shape in spec.verify_shapes:
        if dict(shape) == dict(spec.trace_shape):
            continue
        label = " ".join(f"{k}={v}" for k, v in shape.items())
        cases.append(Case(f"random {label}", spec.example_inputs(shape, rng)))
    return cases + list(extra)


def ort_session(path: str | Path, threads: int = 1) -> Any:
    """A CPU ONNX Runtime session with full graph optimisation (what users will run)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own Fail / InvalidGraph types
        raise VerificationError(f"onnxruntime cannot load {Path(path).name}: {str(e).splitlines()[0][:300]}",
                                "the exported graph is invalid; re-export with the dynamo exporter", code="EF411") from e


def check_dynamic_inputs(session: Any, spec: ExportSpec) -> None:
    """Every axis the spec names must still be dynamic in the graph (not fixed by the trace)."""
    by_name = {t.name: t for t in spec.inputs}
    for inp in session.get_inputs():
        want = by_name.get(inp.name)
        if want is None:
            continue
        for i, (got, axis) in enumerate(zip(inp.shape, want.shape, strict=False)):
            if isinstance(axis, str) and isinstance(got, int):
                raise VerificationError(f"input '{inp.name}' axis {i} ('{axis}') was fixed to {got} by the trace",
                                        "a module uses a constant size there (e.g. a fixed-length parameter or reshape); "
                                        "derive it from the input's shape", code="EF412")


def run_session(session: Any, feed: Feed, output_names: Sequence[str], case: Case) -> dict[str, np.ndarray]:
    """Run ORT on `feed`; a runtime failure is a verification miss naming the case's shapes."""
    names = {i.name for i in session.get_inputs()}
    try:
        outs = session.run(list(output_names), {k: v for k, v in feed.items() if k in names})
    except Exception as e:
        msg = str(e).splitlines()[0][:300]
        raise VerificationError(f"onnxruntime failed on '{case.name}' ({case.shape}): {msg}",
                                "a shape was baked into the graph at trace time; export with the dynamo exporter "
                                "and derive sizes from tensors", code="EF413") from e
    return dict(zip(output_names, outs, strict=True))


def verify_onnx(reference: Reference, onnx_path: str | Path, spec: ExportSpec, cases: Sequence[Case],
                threads: int = 1) -> list[OutputCheck]:
    """Run `cases` through ONNX Runtime and `reference` (PyTorch) and compare every output.

    Returns the measured checks; raises VerificationError on the first output that misses
    its tolerance, naming the output and the input shapes.
    """
    session = ort_session(onnx_path, threads)
    check_dynamic_inputs(session, spec)
    checks: list[OutputCheck] = []
    for case in cases:
        got = run_session(session, case.feed, spec.output_names, case)
        try:
            ref = reference(case.feed)
        except Exception as e:  # the model itself fails on this input (e.g. token ids beyond its vocabulary)
            raise VerificationError(f"PyTorch model failed on '{case.name}' ({case.shape}): {type(e).__name__}: "
                                    f"{str(e).splitlines()[0][:200] if str(e) else ''}",
                                    "check the spec's example inputs and the tokenizer against the model", code="EF416") from e
        for name in spec.output_names:
            if name not in ref:
                raise VerificationError(f"PyTorch model gave no output '{name}' on '{case.name}'",
                                        f"the model returns {sorted(ref)}; fix the spec's outputs", code="EF414")
            c = compare_output(name, np.asarray(ref[name]), got[name], spec.tolerance(name), case.name)
            checks.append(c)
            log.info("verify %s %s: max_abs %.3g cosine %.7f agreement %s", case.name, name, c.max_abs, c.cosine, c.agreement)
            if not c.ok:
                raise VerificationError(f"output '{name}' misses its tolerance on '{case.name}' ({case.shape}): {c.reason}",
                                        "nothing was written; see `edgefuse export --help` and the model's ExportSpec", code="EF410")
    return checks


def summarize(checks: Sequence[OutputCheck]) -> dict[str, Any]:
    """Worst measured values per output, plus the cases run (for the manifest)."""
    out: dict[str, Any] = {}
    for c in checks:
        s = out.setdefault(c.output, {"max_abs": 0.0, "max_rel": 0.0, "min_cosine": 1.0, "min_agreement": None, "min_iou": None})
        s["max_abs"] = max(s["max_abs"], c.max_abs)
        s["max_rel"] = max(s["max_rel"], c.max_rel)
        s["min_cosine"] = min(s["min_cosine"], c.cosine)
        if c.agreement is not None:
            s["min_agreement"] = c.agreement if s["min_agreement"] is None else min(s["min_agreement"], c.agreement)
        if c.min_iou is not None:
            s["min_iou"] = c.min_iou if s["min_iou"] is None else min(s["min_iou"], c.min_iou)
    return {"passed": all(c.ok for c in checks), "cases": sorted({c.case for c in checks}), "outputs": out}
