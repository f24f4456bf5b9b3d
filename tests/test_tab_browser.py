"""The tab in a real headless Chromium: served by the same UI code as in the WebUI, clicked through
upload -> intake report, and the Explain and Edit views. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

from pathlib import Path

import gradio
import httpx
import pytest

from lib_profile import API_PREFIX, sample_photos

try:
    from browser import Browser, chromium_path
    from test_api import NAME, SLUG, TRAIN, Server, png
except ImportError:
    from tests.browser import Browser, chromium_path
    from tests.test_api import NAME, SLUG, TRAIN, Server, png

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
        browser.wait("(document.querySelector('#profile_studio_person input') || {}).value === 'Ada'", timeout=30)  # names
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


def test_tab_explain_and_edit_views(served, tmp_path):
    """A person with a LoRA and a portrait; in the browser: Explain two words, then swap a word (Edit)."""
    url, studio = served
    studio.create_identity(NAME)
    studio.add_photos(SLUG, [(f"{n}.jpg", png(i)) for n, i in sample_photos.selfies()[:6]])
    assert studio.jobs.wait(studio.train(SLUG, TRAIN)["id"], timeout=300)["state"] == "done"
    gen = studio.jobs.wait(studio.generate(SLUG, count=1, seed=3, prompt="portrait of ohwx person in a red sweater",
                                           settings={"width": 64, "height": 64, "steps": 3},
                                           switches={"upscale": False})["id"], timeout=300)
    assert gen["state"] == "done", gen["error"]

    def click_tab(label):
        browser.eval("[...document.querySelectorAll('button')].find(b => b.innerText.trim() === %r).click()" % label)

    def type_into(elem_id, text):
        browser.eval(f"(() => {{ const el = document.querySelector('#{elem_id} textarea, #{elem_id} input');"
                     f" el.value = {text!r}; el.dispatchEvent(new Event('input', {{bubbles: true}})); }})()")

    tag = f"gradio-{gradio.__version__}"
    browser = Browser()
    try:
        browser.goto(url + "/")
        browser.wait(f"(document.querySelector('#profile_studio_person input') || {{}}).value === '{NAME}'", timeout=30)
        browser.eval("document.querySelector('#profile_studio_refresh').click()")  # lists the portraits
        click_tab("4. Explain")
        browser.wait("(document.querySelector('#profile_studio_portrait input') || {}).value.includes('.png')",
                     timeout=30)
        type_into("profile_studio_words", "sweater, red")
        browser.eval("document.querySelector('#profile_studio_explain').click()")
        try:
            browser.wait("document.querySelectorAll('#profile_studio_maps img').length >= 2", timeout=240)
        except TimeoutError:
            browser.screenshot(ARTIFACTS / f"tab-explain-failed-{tag}.png")
            raise AssertionError((browser.eval("document.querySelector('#profile_studio_status').innerText"),
                                  [(j["kind"], j["state"], j["error"]) for j in studio.jobs.list()])) from None
        explained = browser.screenshot(ARTIFACTS / f"tab-explain-{tag}.png")
        # a later pass: the refine pass's maps, of a phrase its prompt adds
        browser.eval("document.querySelector('#profile_studio_pass input[value=\"refine pass\"]').click()")
        type_into("profile_studio_words", "sharp focus")
        browser.eval("document.querySelector('#profile_studio_explain').click()")
        browser.wait("document.querySelectorAll('#profile_studio_maps img').length === 1", timeout=240)
        refined = browser.screenshot(ARTIFACTS / f"tab-explain-refine-{tag}.png")
        click_tab("5. Edit")
        browser.wait("(document.querySelector('#profile_studio_edit_portrait input') || {}).value.includes('.png')",
                     timeout=30)
        type_into("profile_studio_swaps", "red -> blue")
        browser.eval("document.querySelector('#profile_studio_edit').click()")
        browser.wait("!!document.querySelector('#profile_studio_edit_after img')", timeout=240)
        edited = browser.screenshot(ARTIFACTS / f"tab-edit-{tag}.png")
    finally:
        browser.close()
    explains = sorted((j for j in studio.jobs.list() if j["kind"] == "explain"), key=lambda j: j["created"])
    assert [j["state"] for j in explains] == ["done", "done"]
    assert set(explains[0]["result"]["words"]) == {"sweater", "red"} and explains[0]["result"]["pass"] == "first"
    assert list(explains[1]["result"]["words"]) == ["sharp focus"] and explains[1]["result"]["pass"] == "refine"
    assert refined.stat().st_size > 10_000
    jobs = {j["kind"]: j for j in studio.jobs.list()}
    assert jobs["edit"]["state"] == "done" and "blue sweater" in jobs["edit"]["result"]["prompt"]
    assert explained.stat().st_size > 10_000 and edited.stat().st_size > 10_000
