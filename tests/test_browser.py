"""The kiosk page in a real browser: Debian's headless Chromium driven by Playwright (no browser download)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed (apt-get install -y chromium chromium-driver)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """uvicorn in a thread on a loopback port, stopped cleanly at the end."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        import urllib.request

        self.thread.start()
        url = f"http://127.0.0.1:{self.port}"
        for _ in range(300):
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return url
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("kiosk did not become ready")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


def _kiosk_flow(browser, url: str, image: Path, question: str, phrase: str) -> dict:
    page = browser.new_page(viewport={"width": 480, "height": 900}, has_touch=True)
    try:
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']", timeout=15_000)
        assert page.get_attribute("#photo", "accept") == "image/*"
        page.set_input_files("#photo", str(image))
        page.wait_for_selector("#preview:not([hidden])")
        page.fill("#question", question)
        page.click("#ask")
        page.wait_for_selector("#answer-box:not([hidden])", timeout=15_000)
        answer = page.inner_text("#answer")
        confidence = page.inner_text("#confidence")
        page.fill("#phrase", phrase)
        page.click("#ground")
        page.wait_for_selector("#boxed:not([hidden])", timeout=15_000)
        page.wait_for_function("document.getElementById('boxed').naturalWidth > 0")
        size = page.evaluate("[document.getElementById('boxed').naturalWidth, document.getElementById('boxed').naturalHeight]")
        box = [float(v) for v in page.get_attribute("#box-text", "data-box").split(",")]
        page.fill("#question", "what colour is the zebra?")  # a bad question shows a one-line reason, page keeps working
        page.click("#ask")
        page.wait_for_selector("#error:not([hidden])", timeout=15_000)
        error = page.inner_text("#error")
        return {"answer": answer, "confidence": confidence, "size": size, "box": box, "error": error}
    finally:
        page.close()


def test_kiosk_page_answers_and_draws_box(browser, tmp_path: Path) -> None:
    from edgefuse.data.museum import generate
    from edgefuse.runtime.kiosk import KioskPipeline
    from edgefuse.runtime.server import ServerSettings, create_app
    from test_runtime_fixtures import build_tiny_artifact

    folder = build_tiny_artifact(tmp_path / "tiny")
    item = generate("test", n=1)[0]
    image = tmp_path / "exhibit.png"
    Image.fromarray(item.image).save(image)
    qa, ref = item.questions[0], item.refs[0]
    with KioskPipeline(folder, threads=1) as k:
        expected = k.ask(image.read_bytes(), qa.question).answer
        expected_box = k.ground(image.read_bytes(), ref.phrase).box
    app = create_app(lambda: KioskPipeline(folder, threads=1), ServerSettings(), load_in_background=False)
    with _Server(app) as url:
        seen = _kiosk_flow(browser, url, image, qa.question, ref.phrase)
    assert seen["answer"] == expected
    assert seen["confidence"].endswith("% sure)")
    assert seen["size"] == [item.image.shape[1], item.image.shape[0]]
    assert seen["box"] == pytest.approx(list(expected_box), abs=1e-6)
    assert "zebra" in seen["error"]


def test_kiosk_page_on_the_shipped_model(browser, fp32_artifact: Path, tmp_path: Path) -> None:
    """The default model in the page: the answer shown is the ground truth (for a question the model answers right)."""
    import json

    from edgefuse.data.museum import generate
    from edgefuse.runtime.kiosk import KioskPipeline
    from edgefuse.runtime.server import ServerSettings, create_app

    trained = not str(json.loads((fp32_artifact / "manifest.json").read_text()).get("weights_source", "")).startswith("random-init")
    items = generate("test", n=8)
    with KioskPipeline(fp32_artifact, threads=1) as k:
        pairs = [(it, qa) for it in items for qa in it.questions if qa.kind == "colour"]
        answers = k.ask_batch([it.image for it, _ in pairs], [qa.question for _, qa in pairs])
        right = [(it, qa) for (it, qa), a in zip(pairs, answers, strict=True) if a.answer == qa.answer]
        if trained:
            assert right, "the shipped model answers none of the colour questions"
        item, qa = (right or pairs)[0]
        expected = k.ask(item.image, qa.question).answer
    image = tmp_path / "exhibit.png"
    Image.fromarray(item.image).save(image)
    app = create_app(lambda: KioskPipeline(fp32_artifact, threads=1), ServerSettings(), load_in_background=False)
    with _Server(app) as url:
        seen = _kiosk_flow(browser, url, image, qa.question, item.refs[0].phrase)
    assert seen["answer"] == expected
    if trained:
        assert seen["answer"] == qa.answer
    assert seen["size"] == [item.image.shape[1], item.image.shape[0]] and len(seen["box"]) == 4
