"""`edgefuse bench`: structure and sanity of a real side-by-side run on tiny artifacts (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgefuse.bench.core import BenchError, Variant, run_bench, to_markdown, variants_from_args
from edgefuse.runtime.engines.probe import write_probe_artifact


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench_probe")
    return {p: write_probe_artifact(root / f"probe-{p}", p) for p in ("fp32", "int8")}


@pytest.fixture(scope="session")
def result(tiny: dict[str, Path]) -> dict:
    variants = variants_from_args([str(tiny["fp32"]), str(tiny["int8"])], None, threads=1)
    return run_bench(variants, batches=[2, 1], text_length=8, runs=6, warmup=1, passes=2)


def test_rows_cover_every_variant_and_batch(result: dict) -> None:
    rows = result["rows"]
    assert [(r["variant"], r["batch"]) for r in rows] == [("probe-fp32", 1), ("probe-fp32", 2), ("probe-int8", 1), ("probe-int8", 2)]
    assert result["baseline"] == "probe-fp32" and result["batches"] == [1, 2]
    for r in rows:
        assert r["runs"] == 6 and len(r["pass_medians_ms"]) == 2
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert r["throughput_per_s"] == pytest.approx(r["batch"] * 1000.0 / r["median_ms"])
        assert r["peak_rss_mb"] > 10 and r["load_s"] > 0
        assert r["backend"].startswith("ort-cpu:")


def test_ratios_are_against_the_baseline(result: dict) -> None:
    rows = {(r["variant"], r["batch"]): r for r in result["rows"]}
    for b in (1, 2):
        base, other = rows[("probe-fp32", b)], rows[("probe-int8", b)]
        assert base["speedup"] == pytest.approx(1.0) and base["memory_ratio"] == pytest.approx(1.0)
        assert other["speedup"] == pytest.approx(base["median_ms"] / other["median_ms"])
        assert other["memory_ratio"] == pytest.approx(other["peak_rss_mb"] / base["peak_rss_mb"])


def test_markdown_table_has_a_row_per_cell(result: dict) -> None:
    md = to_markdown(result)
    assert md.count("| probe-") == 4 and "speed-up" in md


def test_torch_eager_is_the_baseline_when_given(tiny: dict[str, Path]) -> None:
    variants = [Variant("torch:museum-single", "torch", model="museum-single", threads=1, pretrained=False),
                Variant("probe-fp32", "artifact", path=str(tiny["fp32"]), threads=1)]
    res = run_bench(variants, batches=[1], text_length=8, runs=2, warmup=1, passes=1)
    assert res["baseline"] == "torch:museum-single"
    torch_row = res["rows"][0]
    assert torch_row["backend"].startswith("torch ") and torch_row["speedup"] == pytest.approx(1.0)
    assert torch_row["median_ms"] > 0 and torch_row["peak_rss_mb"] > 0 and torch_row["model_rss_mb"] > 0
    assert res["rows"][1]["speedup"] == pytest.approx(torch_row["median_ms"] / res["rows"][1]["median_ms"])


def test_cli_writes_json_and_markdown(tiny: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgefuse.cli import app

    out = CliRunner().invoke(app, ["bench", str(tiny["fp32"]), "--batch", "1", "--runs", "2", "--passes", "1", "--threads", "1",
                                   "--json", str(tmp_path / "b.json"), "--md", str(tmp_path / "b.md")])
    assert out.exit_code == 0, out.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["rows"][0]["variant"] == "probe-fp32" and data["rows"][0]["median_ms"] > 0
    assert "probe-fp32" in (tmp_path / "b.md").read_text()


def test_bad_input_is_typed(tiny: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(BenchError) as e:
        variants_from_args([str(tmp_path / "missing")], None)
    assert e.value.code == "EF956"
    with pytest.raises(BenchError) as e:
        run_bench([], batches=[1])
    assert e.value.code == "EF953"
    with pytest.raises(BenchError) as e:
        run_bench(variants_from_args([str(tiny["fp32"])], None), batches=[0])
    assert e.value.code == "EF954"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text(json.dumps({"kind": "onnx"}))
    (broken / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(BenchError) as e:
        run_bench([Variant("broken", "artifact", path=str(broken))], batches=[1], runs=1, passes=1)
    assert e.value.code == "EF952" and "broken" in e.value.message


def test_baseline_must_be_the_model_the_artifacts_came_from(tiny: dict[str, Path]) -> None:
    with pytest.raises(BenchError) as e:
        variants_from_args([str(tiny["fp32"])], "museum-dual")
    assert e.value.code == "EF957" and "edgefuse-probe" in e.value.message
