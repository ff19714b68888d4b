"""`edgefuse ask` / `edgefuse serve` from the command line (subprocesses, torch made unimportable)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_runtime_fixtures import build_tiny_artifact

ROOT = Path(__file__).resolve().parents[1]
NO_TORCH = "import sys; sys.modules['torch'] = None\nfrom edgefuse.cli import main\nmain(sys.argv[1:])\n"


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    e = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-c", NO_TORCH, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=e)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    from edgefuse.data.museum import generate

    root = tmp_path_factory.mktemp("cli")
    folder = build_tiny_artifact(root / "tiny")
    item = generate("test", n=1)[0]
    img = root / "exhibit.png"
    Image.fromarray(item.image).save(img)
    return folder, img, item


def test_ask_prints_answer_without_torch(setup) -> None:
    folder, img, item = setup
    q = item.questions[0].question
    r = _cli("ask", str(img), q, "--artifact", str(folder), "--json", "--ground", item.refs[0].phrase, "--match", item.captions[1],
             "--threads", "1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    from edgefuse.runtime.kiosk import KioskPipeline

    with KioskPipeline(folder, threads=1) as k:
        assert out["answer"] == k.ask(img.read_bytes(), q).answer
    drawn = Path(out["ground"]["drawn"])
    assert drawn.is_file() and Image.open(drawn).size == Image.open(img).size
    assert 0 <= out["match"]["score"] <= 1
    text = _cli("ask", str(img), q, "--artifact", str(folder))
    assert text.returncode == 0 and out["answer"] in text.stdout and "% sure" in text.stdout


def test_ask_errors_are_one_line(setup, tmp_path: Path) -> None:
    folder, img, _ = setup
    r = _cli("ask", str(img), "what colour is the zebra?", "--artifact", str(folder))
    assert r.returncode == 2 and "EF742" in r.stderr and "zebra" in r.stderr and "Traceback" not in r.stderr
    r = _cli("ask", str(img), "what colour is the vase?", env={"EDGEFUSE_CACHE": str(tmp_path)})
    assert r.returncode == 2 and "EF610" in r.stderr and "edgefuse export museum-dual" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_binds_loopback_and_gets_ready(setup, tmp_path: Path) -> None:
    folder, img, item = setup
    port = _free_port()
    e = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEFUSE_CACHE": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", NO_TORCH, "serve", "--artifact", str(folder), "--port", str(port), "--threads", "1"],
                            cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("kiosk did not get ready")
        boundary = "edgefuseboundary"
        buf = io.BytesIO()
        Image.fromarray(item.image).save(buf, format="PNG")
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"question\"\r\n\r\n{item.questions[0].question}\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n"
                ).encode() + buf.getvalue() + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/ask", data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.loads(r.read())["answer"]
        with socket.socket() as s:  # bound to loopback only
            assert s.connect_ex((socket.gethostbyname(socket.gethostname()), port)) != 0 or \
                socket.gethostbyname(socket.gethostname()).startswith("127.")
    finally:
        proc.terminate()
        proc.wait(10)
