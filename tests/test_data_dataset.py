"""Dataset folder format: round trip, atomic write, and errors that name file and line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgefuse.data import museum
from edgefuse.data.dataset import ANNOTATIONS, read_dataset, write_dataset
from edgefuse.errors import ArtifactError, DataError


@pytest.fixture(scope="module")
def items() -> list[museum.MuseumItem]:
    return museum.generate("val", 12)


@pytest.fixture(scope="module")
def folder(items, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "val"
    assert write_dataset(items, out) == len(items)
    return out


def test_round_trip(items, folder):
    back = read_dataset(folder)
    assert [b.image_id for b in back] == [i.image_id for i in items]
    for a, b in zip(items, back):
        assert np.array_equal(a.image, b.image)
        assert (a.questions, a.captions, a.negative_captions, a.refs, a.exhibits) == (
            b.questions, b.captions, b.negative_captions, b.refs, b.exhibits)


def test_layout_on_disk(items, folder):
    assert sorted(p.name for p in folder.iterdir()) == [ANNOTATIONS, "images"]
    assert len(list((folder / "images").glob("*.png"))) == len(items)
    first = json.loads((folder / ANNOTATIONS).read_text().splitlines()[0])
    assert first["image"] == f"images/{items[0].image_id}.png"
    assert set(first) >= {"image", "questions", "captions", "negative_captions", "refs"}
    assert set(first["questions"][0]) == {"question", "answer", "kind"}


def test_write_is_deterministic(items, folder, tmp_path):
    out = tmp_path / "again"
    write_dataset(items, out)
    for p in folder.rglob("*"):
        if p.is_file():
            assert (out / p.relative_to(folder)).read_bytes() == p.read_bytes()


def test_existing_folder_refused_and_failed_write_leaves_nothing(items, folder, tmp_path):
    with pytest.raises(ArtifactError):
        write_dataset(items, folder)

    def broken():
        yield items[0]
        raise RuntimeError("generator died")

    out = tmp_path / "half"
    with pytest.raises(RuntimeError):
        write_dataset(broken(), out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def _user_folder(tmp_path: Path, lines: list[str], images: dict[str, bytes] | None = None) -> Path:
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    png = Path(root / "images" / "a.png")
    Image.new("RGB", (20, 10), (200, 0, 0)).save(png)
    for name, data in (images or {}).items():
        (root / name).write_bytes(data)
    (root / ANNOTATIONS).write_text("\n".join(lines) + "\n")
    return root


GOOD = json.dumps({"image": "images/a.png", "questions": [{"question": "what colour is it?", "answer": "red"}]})


def test_user_data_minimal_fields(tmp_path):
    caps_only = json.dumps({"image": "images/a.png", "id": "b", "captions": ["a red square"]})
    root = _user_folder(tmp_path, [GOOD, "", caps_only])
    got = read_dataset(root)
    assert [g.image_id for g in got] == ["a", "b"]
    assert got[0].image.shape == (10, 20, 3) and got[0].questions[0].kind == ""
    assert got[1].captions == ["a red square"] and got[1].questions == []


@pytest.mark.parametrize(
    "bad, line, code, text",
    [
        ("{not json", 2, "EF203", "malformed JSON"),
        ("[1, 2]", 2, "EF203", "expected a JSON object"),
        ('{"questions": [{"question": "q", "answer": "a"}]}', 2, "EF204", "'image'"),
        ('{"image": "images/a.png", "id": "z"}', 2, "EF204", "'questions' or 'captions'"),
        ('{"image": "images/missing.png", "captions": ["x"]}', 2, "EF206", "not found"),
        ('{"image": "../../etc/passwd", "captions": ["x"]}', 2, "EF205", "leaves the dataset folder"),
        ('{"image": "images/a.png", "id": "z", "questions": [{"question": "q"}]}', 2, "EF205", "'answer'"),
        ('{"image": "images/a.png", "id": "z", "captions": "a string"}', 2, "EF205", "list of non-empty strings"),
        ('{"image": "images/a.png", "id": "z", "captions": ["x"], "refs": [{"phrase": "p", "box": [0.5, 0.5, 0.7, 0.1]}]}', 2, "EF205", "inside [0, 1]"),
        ('{"image": "images/a.png", "id": "z", "captions": ["x"], "refs": [{"phrase": "p", "box": [1, 2]}]}', 2, "EF205", "4 numbers"),
        (GOOD, 2, "EF208", "duplicate image id"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, bad, line, code, text):
    root = _user_folder(tmp_path, [GOOD, bad])
    with pytest.raises(DataError) as e:
        read_dataset(root)
    assert e.value.code == code
    assert f"{ANNOTATIONS}:{line}" in e.value.message and text in e.value.message


def test_bad_images_name_the_line(tmp_path):
    bad = json.dumps({"image": "images/b.png", "captions": ["x"]})
    root = _user_folder(tmp_path, [GOOD, bad], {"images/b.png": b"this is not a png"})
    with pytest.raises(DataError) as e:
        read_dataset(root)
    assert e.value.code == "EF222" and "line 2" in e.value.message


def test_truncated_image_names_the_line(tmp_path):
    full = (tmp_path / "full.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full)
    bad = json.dumps({"image": "images/b.png", "captions": ["x"]})
    root = _user_folder(tmp_path, [GOOD, bad], {"images/b.png": full.read_bytes()[:400]})
    with pytest.raises(DataError) as e:
        read_dataset(root)
    assert e.value.code == "EF223" and "line 2" in e.value.message


def test_missing_folder_and_annotations(tmp_path):
    with pytest.raises(DataError) as e:
        read_dataset(tmp_path / "nope")
    assert e.value.code == "EF201"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        read_dataset(tmp_path / "empty")
    assert e.value.code == "EF202" and ANNOTATIONS in e.value.message
    root = _user_folder(tmp_path, [""])
    with pytest.raises(DataError) as e:
        read_dataset(root)
    assert e.value.code == "EF207"


def test_cli_writes_split(tmp_path):
    from edgefuse.cli import main

    out = tmp_path / "cli"
    with pytest.raises(SystemExit) as e:
        main(["data", "test", str(out), "--n", "4"])
    assert e.value.code == 0
    got = read_dataset(out)
    ref = museum.generate("test", 4)
    assert [g.image_id for g in got] == [r.image_id for r in ref]
    assert all(np.array_equal(g.image, r.image) for g, r in zip(got, ref))
    with pytest.raises(SystemExit) as e:
        main(["data", "test", str(out), "--n", "4"])
    assert e.value.code == 2  # exists, no --overwrite
    with pytest.raises(SystemExit) as e:
        main(["data", "tset", str(tmp_path / "x")])
    assert e.value.code == 2


def test_symlinked_images_and_windows_separators(tmp_path):
    elsewhere = tmp_path / "store"
    elsewhere.mkdir()
    Image.new("RGB", (8, 8), (0, 0, 255)).save(elsewhere / "c.png")
    root = _user_folder(tmp_path, [GOOD, json.dumps({"image": "linked\\c.png", "captions": ["a blue square"]})])
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    got = read_dataset(root)
    assert got[1].image_id == "c" and tuple(got[1].image[0, 0]) == (0, 0, 255)
    bad = _user_folder(tmp_path / "x", [json.dumps({"image": str(elsewhere / "c.png"), "captions": ["x"]})])
    with pytest.raises(DataError) as e:
        read_dataset(bad)
    assert e.value.code == "EF205" and ":1" in e.value.message


def test_summary_counts(items):
    from edgefuse.data.dataset import summarize

    s = summarize(items).to_dict()
    assert s["images"] == len(items)
    assert s["questions"] == sum(len(i.questions) for i in items)
    assert s["answers"]["presence"] == {"yes": len(items), "no": len(items)}
    assert s["refs"] == sum(len(i.refs) for i in items)


def test_utf8_bom_and_crlf_accepted(tmp_path):
    root = _user_folder(tmp_path, [])
    (root / ANNOTATIONS).write_bytes(b"\xef\xbb\xbf" + GOOD.encode() + b"\r\n")
    assert [g.image_id for g in read_dataset(root)] == ["a"]


def test_cli_check_folder(tmp_path, capsys):
    from edgefuse.cli import main

    odd = json.dumps({"image": "images/a.png", "id": "z", "questions": [{"question": "what is it?", "answer": "a teapot"}]})
    root = _user_folder(tmp_path, [odd])
    with pytest.raises(SystemExit) as e:
        main(["data", "check", str(root)])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "reads cleanly" in out and "a teapot" in out
    (root / ANNOTATIONS).write_text(odd + "\n{broken\n")
    with pytest.raises(SystemExit) as e:
        main(["data", "check", str(root)])
    assert e.value.code == 2
    assert f"{ANNOTATIONS}:2" in capsys.readouterr().err.replace("\n", "")
    with pytest.raises(SystemExit) as e:
        main(["data", "chek", str(root)])
    assert e.value.code == 2 and "check" in capsys.readouterr().err


def test_contact_sheet_and_preview(items, tmp_path):
    from edgefuse.cli import main
    from edgefuse.data.dataset import contact_sheet

    sheet = contact_sheet(items[:10], columns=4)
    assert sheet.shape == (3 * 128, 4 * 128, 3) and sheet.dtype == np.uint8
    e = items[0].exhibits[0]
    x0, y0 = round(e.box[0] * 128), round(e.box[1] * 128)
    assert tuple(sheet[y0, x0]) == (255, 0, 255)  # box outline drawn at the box corner
    out = tmp_path / "p"
    with pytest.raises(SystemExit):
        main(["data", "val", str(out), "--n", "3", "--preview"])
    assert Image.open(out / "preview.png").size == (8 * 128, 128)
    assert len(read_dataset(out)) == 3  # the extra file does not disturb reading
