"""tests/real_webui/smoke.py (the script that drives a running WebUI through the whole flow) against the
standalone server: every Profile Studio step passes (the real-photo steps too: restyle, edit and explain of a
photo inverted on the host's model; and the whole flow in one call), the WebUI-only steps say skipped, and a
dead URL fails in one row with exit status 1."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lib_profile import API_PREFIX

SCRIPT = Path(__file__).resolve().parent / "real_webui" / "smoke.py"


def load():
    spec = importlib.util.spec_from_file_location("smoke", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_smoke_script_runs_the_whole_flow_on_the_standalone_server(api, studio, tmp_path, capsys):
    smoke = load()
    url = str(api.base_url).rstrip("/")[: -len(API_PREFIX)]
    run = smoke.Smoke(url, timeout=600, webui_dir=tmp_path / "webui")
    assert run.run() == 0, run.rows
    results = {name: result for name, result, _s, _d in run.rows}
    assert results.pop("plain txt2img (before)") == results.pop("plain txt2img (after)") == "skipped"
    assert results.pop("plain txt2img unchanged") == "skipped"
    assert set(results.values()) == {"ok"} and list(results) == [
        "version", "identity", "upload 6 selfies", "train", "generate", "explain", "edit",
        "restyle a photo (direct)", "edit a photo (direct)", "explain a photo (direct)",
        "restyle a photo (null-text)", "delete identity", "leftover scan", "one call (POST /portraits)",
        "one call: delete and scan"]
    details = {name: detail for name, _r, _s, detail in run.rows}
    assert "photo 128x128, reconstruction 128x128, restyled 128x128" in details["restyle a photo (direct)"]
    assert details["restyle a photo (null-text)"].startswith("null-text 2 steps")
    assert "source 128x128, reconstruction 128x128, edited 128x128" in details["edit a photo (direct)"]
    assert "maps of sweater, red" in details["explain a photo (direct)"]
    assert details["one call (POST /portraits)"].startswith("slug anna-smouk-")
    assert "; intake 6 accepted; LoRA anna-smouk-" in details["one call (POST /portraits)"]
    table = capsys.readouterr().out
    assert table.startswith("| step | result | seconds | detail |") and "| leftover scan | ok |" in table


def test_a_dead_url_is_one_failed_row(capsys):
    smoke = load()
    assert smoke.main(["--url", "http://127.0.0.1:9", "--timeout", "5"]) == 1
    out = capsys.readouterr().out
    assert "| version | FAILED |" in out and out.count("\n| ") == 1
