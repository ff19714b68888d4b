"""Web kiosk API: readiness, answers, every kind of bad input (4xx, server keeps serving), queue and deadline."""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from edgefuse.runtime.kiosk import KioskPipeline, Limits  # noqa: E402
from edgefuse.runtime.server import ServerSettings, create_app  # noqa: E402
from test_runtime_fixtures import build_tiny_artifact  # noqa: E402

LIMITS = Limits(max_image_pixels=300 * 300, max_question_chars=120, max_upload_bytes=200_000)


def _png(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


class GatedPipeline(KioskPipeline):
    """The real pipeline, with a gate the test opens to hold the worker (to fill the queue on purpose)."""

    gate: threading.Event

    def answer_prepared(self, pixel_values, questions, top_k=5):
        self.gate.wait(10)
        return super().answer_prepared(pixel_values, questions, top_k)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_artifact(tmp_path_factory.mktemp("server") / "tiny")


@pytest.fixture(scope="module")
def scene():
    from edgefuse.data.museum import generate

    return generate("test", n=1)[0]


@pytest.fixture(scope="module")
def client(folder: Path):
    settings = ServerSettings(queue_size=8, deadline_ms=5000, max_batch=8, max_upload_bytes=LIMITS.max_upload_bytes)
    app = create_app(lambda: KioskPipeline(folder, threads=1, limits=LIMITS), settings, load_in_background=False)
    with TestClient(app) as c:
        yield c


def _ask(c: TestClient, image: bytes, question: str, ctype: str = "image/png", **extra):
    return c.post("/api/ask", files={"image": ("photo.png", image, ctype)}, data={"question": question, **extra})


def test_health_ready_info_and_page(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] and "vqa_logits" in r.json()["warm_up"]["outputs"]
    info = client.get("/api/info").json()
    assert info["tasks"] == ["vqa", "itm", "grounding"] and info["limits"]["queue_size"] == 8
    page = client.get("/")
    assert page.status_code == 200 and 'accept="image/*"' in page.text and "capture" in page.text
    assert client.get("/static/kiosk.js").status_code == 200


def test_ask_ground_match(client: TestClient, folder: Path, scene) -> None:
    png = _png(scene.image)
    q = scene.questions[0].question
    r = _ask(client, png, q, top_k="3")
    assert r.status_code == 200, r.text
    body = r.json()
    with KioskPipeline(folder, threads=1) as k:
        direct = k.ask(png, q, top_k=3)
    assert body["answer"] == direct.answer and body["confidence"] == pytest.approx(direct.confidence, abs=1e-5)
    assert len(body["top_k"]) == 3
    g = client.post("/api/ground", files={"image": ("p.png", png, "image/png")}, data={"phrase": scene.refs[0].phrase})
    assert g.status_code == 200, g.text
    drawn = Image.open(io.BytesIO(base64.b64decode(g.json()["png_base64"])))
    assert drawn.size == (scene.image.shape[1], scene.image.shape[0])
    m = client.post("/api/match", files={"image": ("p.jpg", _png(scene.image, "JPEG"), "image/jpeg")},
                    data={"caption": scene.captions[1]})
    assert m.status_code == 200 and 0 <= m.json()["score"] <= 1
    c = client.post("/api/caption", files={"image": ("p.png", png, "image/png")})
    assert c.status_code == 404 and c.json()["code"] == "EF751"


def test_bad_input_is_4xx_and_server_keeps_serving(client: TestClient, scene) -> None:
    png = _png(scene.image)
    q = "what colour is the vase?"
    cases = [
        (lambda: _ask(client, b"this is not an image", q), 400, "EF222"),
        (lambda: _ask(client, png[: len(png) // 2], q), 400, "EF223"),
        (lambda: _ask(client, b"", q), 400, "EF730"),
        (lambda: _ask(client, _png(np.zeros((400, 400, 3), np.uint8)), q), 413, "EF224"),
        (lambda: _ask(client, b"\x89PNG" + bytes(400_000), q), 413, "EF735"),
        (lambda: _ask(client, png, ""), 400, "EF740"),
        (lambda: _ask(client, png, "what colour " * 20), 400, "EF741"),
        (lambda: _ask(client, png, "what colour is the zebra?"), 400, "EF742"),
        (lambda: _ask(client, png, q, ctype="text/plain"), 415, "EF737"),
        (lambda: _ask(client, png, q, top_k="lots"), 400, "EF739"),
        (lambda: client.post("/api/ask", json={"image": "x", "question": q}), 415, "EF736"),
        (lambda: client.post("/api/ask", data={"question": q}, files={"other": ("a", b"b")}), 400, "EF730"),
        (lambda: client.post("/api/ask", content=b"--xx\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=xx"}), 400, "EF730"),
        (lambda: client.get("/api/nope"), 404, "HTTP404"),
    ]
    for send, status, code in cases:
        r = send()
        assert r.status_code == status, (code, r.status_code, r.text)
        body = r.json()
        assert body["code"] == code, body
        assert body["message"] and "\n" not in body["message"] and "hint" in body
    ok = _ask(client, png, q)
    assert ok.status_code == 200 and ok.json()["answer"]
    stats = client.get("/api/stats").json()
    assert stats["failed"] == 0  # bad input never reached the worker


def _held_client(folder: Path, **settings):
    gate = threading.Event()

    def factory():
        p = GatedPipeline(folder, threads=1, limits=LIMITS)
        p.gate = gate
        gate.set()  # let the warm-up through
        return p

    app = create_app(factory, ServerSettings(max_upload_bytes=LIMITS.max_upload_bytes, **settings), load_in_background=False)
    return app, gate


def _fire(client: TestClient, png: bytes, n: int) -> list:
    results: list = [None] * n

    def go(i: int) -> None:
        results[i] = _ask(client, png, "what colour is the vase?")

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    return threads, results


def test_full_queue_answers_503_and_batches_the_rest(folder: Path, scene) -> None:
    app, gate = _held_client(folder, queue_size=2, deadline_ms=10_000, max_batch=2, batch_wait_ms=5)  # 4 in flight at most
    png = _png(scene.image)
    with TestClient(app) as client:
        gate.clear()  # hold the worker on its first batch
        threads, results = _fire(client, png, 7)
        time.sleep(0.3)
        gate.set()
        for t in threads:
            t.join(15)
        codes = sorted(r.status_code for r in results)
        stats = client.get("/api/stats").json()
    assert codes.count(200) == 4 and codes.count(503) == 3, [r.text for r in results]  # queue_size + max_batch admitted; the rest refused at once
    busy = [r for r in results if r.status_code == 503]
    assert all(r.json()["code"] == "EF790" and r.headers["retry-after"] == "1" for r in busy)
    answers = {r.json()["answer"] for r in results if r.status_code == 200}
    assert len(answers) == 1  # same photo and question: batched answers equal the single one
    assert stats["rejected_full"] == len(busy) and stats["mean_batch"] > 1.0, stats


def test_request_past_deadline_is_dropped(folder: Path, scene) -> None:
    app, gate = _held_client(folder, queue_size=4, deadline_ms=300, max_batch=1)
    png = _png(scene.image)
    with TestClient(app) as client:
        gate.clear()
        threads, results = _fire(client, png, 3)
        time.sleep(0.8)
        gate.set()
        for t in threads:
            t.join(15)
        for _ in range(100):  # the worker drops the two queued jobs once it is free
            stats = client.get("/api/stats").json()
            if stats["expired"] >= 2:
                break
            time.sleep(0.02)
        after = _ask(client, png, "what colour is the vase?")
    # all three answered 503 at their deadline: one was running (result discarded), two were queued
    assert [r.status_code for r in results] == [503, 503, 503], [r.text for r in results]
    assert all(r.json()["code"] in ("EF791", "EF792") for r in results)
    assert stats["expired"] == 2 and stats["completed"] >= 1
    assert after.status_code == 200  # and the kiosk keeps serving


def test_not_ready_until_loaded(folder: Path) -> None:
    release = threading.Event()

    def slow_factory():
        release.wait(10)
        return KioskPipeline(folder, threads=1, limits=LIMITS)

    app = create_app(slow_factory, ServerSettings())
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["reason"] == "loading"
        busy = _ask(client, b"x", "q")
        assert busy.status_code == 503 and busy.json()["code"] == "EF793"
        release.set()
        for _ in range(100):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        assert client.get("/readyz").status_code == 200


def test_failed_load_is_reported(tmp_path: Path) -> None:
    app = create_app(lambda: KioskPipeline(tmp_path / "missing"), ServerSettings(), load_in_background=False)
    with TestClient(app) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and "EF603" in r.json()["reason"]
        assert client.get("/healthz").status_code == 200
