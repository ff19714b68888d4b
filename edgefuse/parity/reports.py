"""Validation reports in one folder: report.json (machine), report.md (PR comment),
report.html (self-contained, inline SVG plots, no scripts), junit.xml (one test case per
gate per artifact, so CI systems show gates natively).
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from edgefuse.artifacts import atomic_write_text, staged_dir
from edgefuse.config import GateConfig
from edgefuse.parity import plots
from edgefuse.parity.catalog import TASK_METRICS, base_name, format_drop, format_value, lookup
from edgefuse.parity.gates import FAILED, PASSED, SKIPPED, GateResult
from edgefuse.parity.metrics import finite_or_none
from edgefuse.parity.scoring import MetricResult

REPORT_FILES = ("report.json", "report.md", "report.html", "junit.xml")
REPORT_SCHEMA = 1


@dataclass
class GroundingSample:
    """One referring phrase shown in the HTML report: the image, the labelled and reference boxes."""

    image: np.ndarray  # uint8 [S, S, 3]
    phrase: str
    gt_box: list[float] | None
    reference_box: list[float]
    reference_attention: np.ndarray | None


@dataclass
class ArtifactReport:
    name: str
    path: str
    precision: str
    provider: str
    manifest: dict[str, Any]
    metrics: dict[str, MetricResult]
    gates: list[GateResult]
    histograms: dict[str, dict[str, Any]] = field(default_factory=dict)
    sample_boxes: list[list[float]] = field(default_factory=list)
    sample_attention: list[np.ndarray | None] = field(default_factory=list)
    sensitivity: list[tuple[str, float]] | None = None
    sensitivity_source: str | None = None
    disagreements: list[dict[str, Any]] = field(default_factory=list)  # first VQA items answered differently from FP32
    seconds: float = 0.0

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if g.status == FAILED]

    @property
    def status(self) -> str:
        return FAILED if self.failed else PASSED


@dataclass
class ValidationReport:
    model: dict[str, Any]
    eval_set: dict[str, Any]
    reference: dict[str, float]
    artifacts: list[ArtifactReport]
    gates: list[GateConfig]
    bootstrap: dict[str, Any]
    samples: list[GroundingSample] = field(default_factory=list)
    created: str = ""
    seconds: float = 0.0
    tool_versions: dict[str, str] = field(default_factory=dict)
    command: str = ""
    reference_seconds: float = 0.0
    threads: int = 0

    @property
    def gate_results(self) -> list[GateResult]:
        return [g for a in self.artifacts for g in a.gates]

    @property
    def passed(self) -> bool:
        return not any(g.status == FAILED for g in self.gate_results)

    @property
    def exit_code(self) -> int:
        """0: every gate passed (or was skipped as not applicable); 1: a gate failed."""
        return 0 if self.passed else 1

    def counts(self) -> dict[str, int]:
        res = self.gate_results
        return {s: sum(1 for g in res if g.status == s) for s in (PASSED, FAILED, SKIPPED)}


# ------------------------------------------------------------------------------------ JSON


def to_json(report: ValidationReport) -> dict[str, Any]:
    return {
        "schema": REPORT_SCHEMA,
        "created": report.created,
        "command": report.command,
        "passed": report.passed,
        "exit_code": report.exit_code,
        "gate_counts": report.counts(),
        "seconds": round(report.seconds, 3),
        "reference_seconds": round(report.reference_seconds, 3),
        "threads": report.threads,
        "model": report.model,
        "eval_set": report.eval_set,
        "bootstrap": report.bootstrap,
        "reference": {"metrics": {k: finite_or_none(v) for k, v in report.reference.items()}},
        "gates": [{k: v for k, v in vars(g).items() if v is not None} for g in report.gates],
        "artifacts": [
            {
                "name": a.name, "path": a.path, "precision": a.precision, "provider": a.provider,
                "status": a.status, "seconds": round(a.seconds, 3), "manifest": a.manifest,
                "metrics": {k: m.to_dict() for k, m in a.metrics.items()},
                "gates": [g.to_dict() for g in a.gates],
                "error_histograms": a.histograms,
                "sensitivity_source": a.sensitivity_source,
                "disagreements": a.disagreements,
            }
            for a in report.artifacts
        ],
        "tool_versions": report.tool_versions,
    }


# -------------------------------------------------------------------------------- Markdown

_ICON = {PASSED: "✅", FAILED: "❌", SKIPPED: "⏭️"}


def headline(report: ValidationReport) -> str:
    """One line verdict: "all 4 gates passed", "1 of 12 gates failed, 2 skipped", ..."""
    c = report.counts()
    total = c[PASSED] + c[FAILED]
    skipped = f", {c[SKIPPED]} skipped" if c[SKIPPED] else ""
    if not report.gates:
        return "no gates configured"
    if total == 0:
        return f"no gate applies to this model ({c[SKIPPED]} skipped)"
    if report.passed:
        return f"all {total} gates passed{skipped}"
    return f"{c[FAILED]} of {total} gates failed{skipped}"


def _ci_text(m: MetricResult) -> str:
    if m.drop_ci is None or not all(math.isfinite(x) for x in m.drop_ci):
        return ""
    d = m.definition
    return f" [{format_drop(d, m.drop_ci[0])}, {format_drop(d, m.drop_ci[1])}]"


def _metric_names(report: ValidationReport, kind: str) -> list[str]:
    names: list[str] = []
    for a in report.artifacts:
        for k, m in a.metrics.items():
            if m.definition.kind == kind and k not in names:
                names.append(k)
    if kind != "tensor":
        order = list(TASK_METRICS)
        names.sort(key=lambda n: (order.index(base_name(n)) if base_name(n) in order else len(order), n))
    return names


def to_markdown(report: ValidationReport) -> str:
    """A PR comment: verdict, gates, task metrics with drops and intervals, tensor metrics."""
    conf = report.bootstrap.get("confidence", 0.95)
    lines = [f"## edgefuse validate: {'✅' if report.passed else '❌'} {headline(report)}", ""]
    lines.append(f"Model `{report.model.get('name')}` (weights sha256 `{str(report.model.get('weights_sha256', ''))[:12]}`), "
                 f"reference: FP32 PyTorch. Evaluation set: {report.eval_set.get('source')} "
                 f"({report.eval_set.get('images')} images; " +
                 ", ".join(f"{v} {k}" for k, v in report.eval_set.get("items", {}).items()) + "). "
                 f"Intervals: {report.bootstrap.get('resamples')} paired bootstrap resamples, seed {report.bootstrap.get('seed')}, "
                 f"{conf * 100:g} %.")
    lines.append("")
    if report.gates:
        lines += ["### Gates", "", "| artifact | gate | result | detail |", "|---|---|---|---|"]
        for a in report.artifacts:
            for g in a.gates:
                lines.append(f"| `{a.name}` | `{g.title}` | {_ICON[g.status]} {g.status} | {g.message} |")
        lines.append("")
    names = _metric_names(report, "task") + _metric_names(report, "agreement")
    if names:
        lines += ["### Task metrics", "",
                  "Each artifact cell: value, drop against FP32 PyTorch (positive = worse) and its interval.", "",
                  "| metric | FP32 PyTorch | " + " | ".join(f"`{a.name}`" for a in report.artifacts) + " |",
                  "|---|---|" + "---|" * len(report.artifacts)]
        for n in names:
            d = lookup(n)
            ref = report.reference.get(n, d.ideal)
            cells = []
            for a in report.artifacts:
                m = a.metrics.get(n)
                cells.append("n/a" if m is None else f"{format_value(d, m.value)} ({format_drop(d, m.drop)}{_ci_text(m)})")
            lines.append(f"| {n} | {format_value(d, ref)} | " + " | ".join(cells) + " |")
        lines.append("")
    tnames = _metric_names(report, "tensor")
    if tnames:
        lines += ["<details><summary>Tensor metrics (artifact vs FP32 PyTorch)</summary>", "",
                  "| output | statistic | " + " | ".join(f"`{a.name}`" for a in report.artifacts) + " |",
                  "|---|---|" + "---|" * len(report.artifacts)]
        for n in tnames:
            d = lookup(n)
            out, stat = n.split(".", 1)[1].rsplit(".", 1)
            cells = [format_value(d, a.metrics[n].value) if n in a.metrics else "n/a" for a in report.artifacts]
            lines.append(f"| {out} | {stat} | " + " | ".join(cells) + " |")
        lines += ["", "</details>", ""]
    lines.append(f"<sub>edgefuse {report.tool_versions.get('edgefuse', '')} · {report.created} · "
                 f"{report.seconds:.1f} s · full report: report.html</sub>")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ HTML

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd} h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0;font-size:13px} td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}
th{background:#f4f4f4} .passed{color:#1a7f37} .failed{color:#cf222e;font-weight:bold} .skipped{color:#888}
.verdict{font-size:18px;padding:8px 12px;border-radius:6px;display:inline-block}
.verdict.passed{background:#dafbe1} .verdict.failed{background:#ffebe9}
.plots{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start} figure{margin:0} figcaption{font-size:12px;color:#555}
.sample{display:inline-block;margin:0 12px 12px 0;vertical-align:top} .legend span{margin-right:12px}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px}
"""


def _esc(x: Any) -> str:
    return escape(str(x))


def _gate_limits(report: ValidationReport, metric: str) -> float | None:
    lims = [g.max_drop for g in report.gates if g.metric == metric and g.max_drop is not None]
    return min(lims) if lims else None


_HTML_ICON = {PASSED: "✓", FAILED: "✗", SKIPPED: "–"}  # in every common font, unlike emoji


def to_html(report: ValidationReport) -> str:
    """A self-contained page: verdict, gates, metric tables and inline SVG plots."""
    h: list[str] = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
                    '<meta name="viewport" content="width=device-width,initial-scale=1">',
                    f"<title>edgefuse validate: {_esc(report.model.get('name'))}</title>",
                    # no network, no scripts: inline styles and data: images only
                    "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
                    "style-src 'unsafe-inline'; img-src data:\">",
                    f"<style>{_CSS}</style></head><body>"]
    status = PASSED if report.passed else FAILED
    h.append(f"<h1>edgefuse validate: <code>{_esc(report.model.get('name'))}</code></h1>")
    h.append(f'<p class="verdict {status}" id="verdict">{_HTML_ICON[status]} {_esc(headline(report))} '
             f"(exit code {report.exit_code})</p>")
    ev = report.eval_set
    h.append(f"<p>Reference: FP32 PyTorch, weights sha256 <code>{_esc(str(report.model.get('weights_sha256', ''))[:16])}</code>. "
             f"Evaluation set: {_esc(ev.get('source'))}, {_esc(ev.get('images'))} images "
             f"({_esc(', '.join(f'{v} {k}' for k, v in ev.get('items', {}).items()))}). "
             f"Intervals: {_esc(report.bootstrap.get('resamples'))} paired bootstrap resamples (seed {_esc(report.bootstrap.get('seed'))}), "
             f"{report.bootstrap.get('confidence', 0.95) * 100:g} %. Created {_esc(report.created)} in {report.seconds:.1f} s.</p>")

    if report.gates:
        h.append('<h2>Gates</h2><table id="gates"><tr><th>artifact</th><th>gate</th><th>result</th><th>detail</th></tr>')
        for a in report.artifacts:
            for g in a.gates:
                h.append(f"<tr><td><code>{_esc(a.name)}</code></td><td><code>{_esc(g.title)}</code></td>"
                         f'<td class="{g.status}">{_HTML_ICON[g.status]} {g.status}</td><td>{_esc(g.message)}</td></tr>')
        h.append("</table>")

    h.append("<h2>Artifacts</h2><table><tr><th>artifact</th><th>precision</th><th>provider</th><th>path</th><th>seconds</th></tr>")
    for a in report.artifacts:
        h.append(f"<tr><td><code>{_esc(a.name)}</code></td><td>{_esc(a.precision)}</td><td>{_esc(a.provider)}</td>"
                 f"<td><code>{_esc(a.path)}</code></td><td>{a.seconds:.1f}</td></tr>")
    h.append("</table>")

    names = _metric_names(report, "task") + _metric_names(report, "agreement")
    if names:
        h.append('<h2>Task metrics</h2><table id="task-metrics"><tr><th>metric</th><th>FP32 PyTorch</th>'
                 + "".join(f"<th>{_esc(a.name)}</th>" for a in report.artifacts) + "</tr>")
        for n in names:
            d = lookup(n)
            row = f"<tr><td title=\"{_esc(d.description)}\">{_esc(n)}</td><td>{_esc(format_value(d, report.reference.get(n, d.ideal)))}</td>"
            for a in report.artifacts:
                m = a.metrics.get(n)
                row += "<td>n/a</td>" if m is None else f"<td>{_esc(format_value(d, m.value))} ({_esc(format_drop(d, m.drop) + _ci_text(m))})</td>"
            h.append(row + "</tr>")
        h.append("</table>")

    h.append('<h2>Drop per metric</h2><div class="plots" id="drop-plots">')
    for a in report.artifacts:
        for unit, kinds, title in (("pt", ("task",), "task metrics"), ("fraction", ("agreement",), "disagreement with FP32")):
            rows = [(n, m.drop, m.drop_ci, _gate_limits(report, n)) for n, m in a.metrics.items()
                    if m.definition.kind in kinds and m.drop is not None]
            svg = plots.drop_chart(rows, unit, f"{a.name}: {title}")
            if svg:
                h.append(f"<figure>{svg}</figure>")
    h.append("</div>")

    tnames = _metric_names(report, "tensor")
    if tnames:
        h.append('<h2>Tensor metrics</h2><table id="tensor-metrics"><tr><th>output</th><th>statistic</th>'
                 + "".join(f"<th>{_esc(a.name)}</th>" for a in report.artifacts) + "</tr>")
        for n in tnames:
            d = lookup(n)
            out, stat = n.split(".", 1)[1].rsplit(".", 1)
            h.append(f"<tr><td>{_esc(out)}</td><td>{_esc(stat)}</td>" + "".join(
                f"<td>{_esc(format_value(d, a.metrics[n].value)) if n in a.metrics else 'n/a'}</td>" for a in report.artifacts) + "</tr>")
        h.append("</table>")

    h.append('<h2>Error histograms</h2><div class="plots" id="histograms">')
    for a in report.artifacts:
        for out, hist in a.histograms.items():
            h.append(f"<figure>{plots.histogram(hist['edges'], hist['counts'], f'{a.name}: {out}', hist.get('zeros', 0))}</figure>")
    h.append("</div>")

    dis = [a for a in report.artifacts if a.disagreements]
    if dis:
        h.append('<h2>Where artifacts answer differently from FP32</h2><table id="disagreements"><tr><th>artifact</th>'
                 "<th>image</th><th>question</th><th>label</th><th>FP32 PyTorch</th><th>artifact</th></tr>")
        for a in dis:
            for d in a.disagreements:
                h.append(f"<tr><td><code>{_esc(a.name)}</code></td><td>{_esc(d['image_id'])}</td><td>{_esc(d['question'])}</td>"
                         f"<td>{_esc(d['label'])}</td><td>{_esc(d['reference'])}</td><td>{_esc(d['artifact'])}</td></tr>")
        h.append("</table>")

    sens = [a for a in report.artifacts if a.sensitivity]
    h.append('<h2>Per-layer sensitivity (quantize stage)</h2>')
    if sens:
        h.append('<div class="plots" id="sensitivity">')
        for a in sens:
            h.append(f"<figure>{plots.sensitivity_chart(a.sensitivity or [], f'{a.name}: SQNR per quantized group (lowest first)')}"
                     f"<figcaption>from {_esc(a.sensitivity_source)}</figcaption></figure>")
        h.append("</div>")
    else:
        h.append("<p>No sensitivity file next to the artifacts (written by <code>edgefuse quantize</code>).</p>")

    if report.samples:
        h.append('<h2>Grounding samples</h2><p class="legend"><span style="color:#1a9850">■ labelled box</span>'
                 '<span style="color:#2166ac">■ FP32 PyTorch</span><span style="color:#e66101">▨ artifact (dashed)</span></p>'
                 '<div id="samples">')
        for a in report.artifacts:
            h.append(f"<h3>{_esc(a.name)}</h3>")
            for i, s in enumerate(report.samples):
                art_box = a.sample_boxes[i] if i < len(a.sample_boxes) else None
                art_att = a.sample_attention[i] if i < len(a.sample_attention) else None
                boxes = [("labelled", s.gt_box, "gt"), ("FP32 PyTorch", s.reference_box, "ref"), (a.name, art_box, "art")]
                parts = [plots.boxes_on_image(s.image, boxes, title=s.phrase)]
                if s.reference_attention is not None:
                    parts.append(plots.attention_map(s.reference_attention, 192, "FP32 attention", s.image))
                if art_att is not None:
                    parts.append(plots.attention_map(art_att, 192, f"{a.name} attention", s.image))
                h.append(f'<figure class="sample">{" ".join(p for p in parts if p)}'
                         f"<figcaption>“{_esc(s.phrase)}”: boxes · [CLS]→patch attention of FP32 · of the artifact (red = more)</figcaption></figure>")
        h.append("</div>")
    h.append(f"<p><small>edgefuse {_esc(report.tool_versions.get('edgefuse', ''))}; "
             f"{_esc(', '.join(f'{k} {v}' for k, v in report.tool_versions.items() if k != 'edgefuse'))}</small></p>")
    h.append("</body></html>")
    return "\n".join(h)


# ----------------------------------------------------------------------------------- JUnit


def to_junit(report: ValidationReport) -> str:
    """JUnit XML: a testsuite per artifact, a testcase per gate (failure / skipped elements)."""
    c = report.counts()
    root = ET.Element("testsuites", name="edgefuse validate", tests=str(sum(c.values())), failures=str(c[FAILED]),
                      errors="0", skipped=str(c[SKIPPED]), time=f"{report.seconds:.3f}")
    for a in report.artifacts:
        ac = {s: sum(1 for g in a.gates if g.status == s) for s in (PASSED, FAILED, SKIPPED)}
        suite = ET.SubElement(root, "testsuite", name=f"edgefuse.validate.{a.name}", tests=str(len(a.gates)),
                              failures=str(ac[FAILED]), errors="0", skipped=str(ac[SKIPPED]), time=f"{a.seconds:.3f}",
                              timestamp=report.created)
        props = ET.SubElement(suite, "properties")
        for k, v in (("path", a.path), ("precision", a.precision), ("provider", a.provider), ("model", report.model.get("name"))):
            ET.SubElement(props, "property", name=k, value=str(v))
        for g in a.gates:
            case = ET.SubElement(suite, "testcase", classname=f"edgefuse.validate.{a.name}", name=g.title, time="0")
            if g.status == FAILED:
                f = ET.SubElement(case, "failure", message=g.message, type="GateFailed")
                f.text = g.message
            elif g.status == SKIPPED:
                ET.SubElement(case, "skipped", message=g.message)
            else:
                ET.SubElement(case, "system-out").text = g.message
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# ---------------------------------------------------------------------------------- writing


def _finite(obj: Any) -> Any:
    """Strict JSON: NaN and infinities (an undefined AUC, the SQNR of identical outputs) become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj


def _render(report: ValidationReport) -> dict[str, str]:
    return {
        "report.json": json.dumps(_finite(to_json(report)), indent=2, sort_keys=False, allow_nan=False, default=str) + "\n",
        "report.md": to_markdown(report),
        "report.html": to_html(report),
        "junit.xml": to_junit(report),
    }


def write_reports(report: ValidationReport, folder: str | Path) -> dict[str, Path]:
    """Write the four reports. A new folder (or one holding only earlier reports) is built
    aside and swapped in whole; a folder with other files gets each report written atomically."""
    folder = Path(folder)
    texts = _render(report)
    own = folder.is_dir() and all(p.name in REPORT_FILES for p in folder.iterdir())
    if not folder.exists() or own:
        with staged_dir(folder, overwrite=True) as tmp:
            for name, text in texts.items():
                atomic_write_text(tmp / name, text)
    else:
        for name, text in texts.items():
            atomic_write_text(folder / name, text)
    return {name: folder / name for name in texts}
