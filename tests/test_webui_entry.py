"""The WebUI entry points: preload.py, scripts/profile_studio.py, the tab and the API routes."""

import argparse
import importlib
import importlib.abc
import importlib.util
import pkgutil
import sys
from pathlib import Path

import fastapi
import pytest
from fastapi.testclient import TestClient

import lib_profile
from lib_profile.api.routes import make_router

try:
    from standins import webui as standin
except ImportError:  # tests/ imported as a package
    from tests.standins import webui as standin

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "profile_studio.py"
VERSION_URL = lib_profile.API_PREFIX + "/version"


@pytest.fixture
def webui(tmp_path, monkeypatch):
    """The stand-in WebUI ``modules`` package, present only during the test."""
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    with standin.installed(tmp_path / "webui") as modules:
        yield modules


@pytest.fixture
def callbacks(webui):
    """The callbacks that loading ``scripts/profile_studio.py`` registers, by category."""
    standin.load_script(SCRIPT)
    return webui.script_callbacks.callbacks


def version_routes(app):
    return [r for r in app.routes if getattr(r, "path", None) == VERSION_URL]


def test_script_registers_one_tab_and_one_app_started(webui):
    before = list(sys.path)
    module = standin.load_script(SCRIPT)
    assert sys.path == before
    registered = webui.script_callbacks.callbacks
    assert len(registered["ui_tabs"]) == 1
    assert len(registered["app_started"]) == 1
    assert len(registered["ui_settings"]) == 1
    assert all(not v for k, v in registered.items() if k not in ("ui_tabs", "app_started", "ui_settings"))
    assert not registered["cfg_denoiser"]  # attention hooks are registered per job only
    scripts = webui.scripts
    assert not any(
        isinstance(v, type) and issubclass(v, scripts.Script) for v in vars(module).values()
    )


@pytest.mark.parametrize("demo", [None, object()], ids=["nowebui", "webui"])
def test_app_started_adds_version_route_once(callbacks, demo):
    (app_started,) = callbacks["app_started"]
    app = fastapi.FastAPI()
    app_started(demo, app)
    app_started(demo, app)
    assert len(version_routes(app)) == 1

    response = TestClient(app).get(VERSION_URL)
    assert response.status_code == 200
    # the WebUI's flavour, before any job (the studio and its model are not made for it)
    assert response.json() == {"name": "Profile Studio", "version": lib_profile.__version__, "api": 1, "host": "a1111"}
    from lib_profile.webui.register import get_studio

    assert get_studio.peek() is None
    assert len([r for r in app.routes if getattr(r, "path", "").startswith(lib_profile.API_PREFIX)]) >= 15


def test_app_started_again_on_new_app_after_reload(callbacks):
    (app_started,) = callbacks["app_started"]
    first, second = fastapi.FastAPI(), fastapi.FastAPI()
    app_started(None, first)
    app_started(None, second)
    assert len(version_routes(first)) == len(version_routes(second)) == 1


def test_ui_tabs_returns_the_tab(callbacks):
    import gradio as gr

    (ui_tabs,) = callbacks["ui_tabs"]
    tabs = ui_tabs()
    assert len(tabs) == 1
    blocks, title, elem_id = tabs[0]
    assert isinstance(blocks, gr.Blocks)
    assert title == "Profile Studio"
    assert elem_id == "profile_studio"


def test_settings_section_holds_the_defaults(callbacks, webui):
    (ui_settings,) = callbacks["ui_settings"]
    ui_settings()
    added = webui.shared.opts.added
    assert {"profile_studio_outputs", "profile_studio_train_steps", "profile_studio_min_photos",
            "profile_studio_detail_engine"} <= set(added)
    assert all(info.section == ("profile_studio", "Profile Studio") for info in added.values())


def test_webui_auth_protects_our_routes(tmp_path):
    with standin.installed(tmp_path / "webui", api_auth="ann:pw"):
        from lib_profile.webui import register

        app = fastapi.FastAPI()
        register.app_started(None, app)
        client = TestClient(app)
        assert client.get(VERSION_URL).status_code == 401
        assert client.get(VERSION_URL, auth=("ann", "pw")).status_code == 200


class _NoWebUI(importlib.abc.MetaPathFinder):
    """Refuses (and records) every import of the WebUI's ``modules`` package."""

    def __init__(self):
        self.attempts = []

    def find_spec(self, name, path=None, target=None):
        if name == "modules" or name.startswith("modules."):
            self.attempts.append(name)
            raise ImportError(f"lib_profile must not import the WebUI at module top: {name}")
        return None


def test_no_module_imports_the_webui_at_top():
    saved = {n: m for n, m in sys.modules.items() if n == "modules" or n.startswith("modules.")}
    saved.update({n: m for n, m in sys.modules.items() if n == "lib_profile" or n.startswith("lib_profile.")})
    for name in saved:
        del sys.modules[name]
    finder = _NoWebUI()
    sys.meta_path.insert(0, finder)
    imported = []
    try:
        package = importlib.import_module("lib_profile")

        def fail(name):
            raise ImportError(f"cannot import {name}")

        for info in pkgutil.walk_packages(package.__path__, "lib_profile.", onerror=fail):
            if info.name.rsplit(".", 1)[-1] == "__main__":
                continue  # runs the command line when imported
            importlib.import_module(info.name)
            imported.append(info.name)
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n.split(".", 1)[0] in ("modules", "lib_profile")]:
            del sys.modules[name]
        sys.modules.update(saved)
    assert finder.attempts == []
    assert {"lib_profile.webui.register", "lib_profile.ui.tab", "lib_profile.api.routes"} <= set(imported)


def test_preload_adds_data_dir_flag(tmp_path):
    spec = importlib.util.spec_from_file_location("preload.py", str(ROOT / "preload.py"))
    preload = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(preload)

    parser = argparse.ArgumentParser()
    preload.preload(parser)
    assert parser.parse_args([]).profile_studio_dir is None
    args = parser.parse_args(["--profile-studio-dir", str(tmp_path)])
    assert args.profile_studio_dir == str(tmp_path)


def test_openapi_documents_version_route():
    app = fastapi.FastAPI()
    app.include_router(make_router())
    schema = app.openapi()
    assert "get" in schema["paths"][VERSION_URL]
    fields = schema["components"]["schemas"]["VersionResponse"]["properties"]
    assert set(fields) == {"name", "version", "api", "host"}
    assert all(field.get("description") for field in fields.values())
    assert fields["api"]["default"] == 1
