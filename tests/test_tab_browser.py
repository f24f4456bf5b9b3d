"""The tab in a real headless Chromium: served by the same UI code as in the WebUI, clicked through
upload -> intake report. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

from pathlib import Path

import gradio
import httpx
import pytest

from lib_profile import API_PREFIX, sample_photos

try:
    from browser import Browser, chromium_path
    from test_api import Server
except ImportError:
    from tests.browser import Browser, chromium_path
    from tests.test_api import Server

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
pytestmark = pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium package")


@pytest.fixture
def served(host, tmp_path, monkeypatch):
    from lib_profile.serve import make_app
    from lib_profile.service import Studio

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    studio = Studio(host, tmp_path / "data", lora_root=tmp_path / "loras", outputs_root=tmp_path / "outputs")
    server = Server(make_app(lambda: studio, ui=True))
    yield server.url, studio
    server.stop()
    studio.close()


def test_tab_upload_then_report(served, tmp_path):
    url, studio = served
    httpx.post(f"{url}{API_PREFIX}/identities", json={"name": "Ada", "class_word": "woman"}).raise_for_status()
    files = []
    for name, image in sample_photos.selfies()[:6]:
        path = tmp_path / f"{name}.jpg"
        image.save(path, quality=92)
        files.append(str(path))
    sample_photos.coffee().save(tmp_path / "coffee.jpg")
    files.append(str(tmp_path / "coffee.jpg"))

    tag = f"gradio-{gradio.__version__}"
    browser = Browser()
    try:
        browser.goto(url + "/")
        browser.wait("!!document.querySelector('#profile_studio_check')")
        browser.wait("(document.querySelector('#profile_studio_person input') || {}).value === 'ada'", timeout=30)
        browser.screenshot(ARTIFACTS / f"tab-start-{tag}.png")
        browser.set_files("#profile_studio_photos input[type=file]", files)
        browser.wait("document.querySelector('#profile_studio_photos').innerText.includes('coffee')", timeout=60)
        browser.eval("document.querySelector('#profile_studio_check').click()")
        report = browser.wait("(() => { const t = document.querySelector('#profile_studio_report').innerText;"
                              " return t.includes('photos accepted') ? t : null; })()", timeout=180)
        browser.wait("!!document.querySelector('#profile_studio_sheet img')", timeout=30)
        shot = browser.screenshot(ARTIFACTS / f"tab-report-{tag}.png")
    finally:
        browser.close()
    assert "6 of 7 photos accepted" in report
    assert "coffee.jpg" in report  # the rejected photo is named with its reason
    assert shot.stat().st_size > 10_000
    assert studio.store.get("ada")["intake"]["counts"]["accepted"] == 6
