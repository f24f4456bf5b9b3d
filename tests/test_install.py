"""install.py: installs only what is missing, never what the WebUI pins, and honours --skip-install."""

import importlib.util
import sys
import time
import types
from pathlib import Path

import pytest

from lib_profile import deps

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def installer(monkeypatch):
    spec = importlib.util.spec_from_file_location("profile_studio_install", ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setattr(sys, "argv", ["install.py"])
    spec.loader.exec_module(module)
    return module


def test_nothing_to_do_when_everything_is_present(installer):
    calls = []
    start = time.perf_counter()
    assert installer.main(runner=lambda *a: calls.append(a)) == 0
    assert calls == [] and deps.missing() == []
    assert time.perf_counter() - start < 5  # metadata reads only, no imports of heavy packages


def test_missing_packages_are_installed_with_host_pins_held(installer, monkeypatch):
    real = deps.installed
    monkeypatch.setattr(deps, "installed", lambda d: None if d in ("mediapipe", "pillow-heif") else real(d))
    calls = []
    installer.main(runner=lambda specs, constraints: calls.append((specs, constraints)))
    (specs, constraints), = calls
    assert specs == [deps.MEDIAPIPE_INSTALL, "pillow-heif==0.16.0"]
    pinned = {c.split("==")[0] for c in constraints}
    assert {"torch", "gradio", "pydantic", "fastapi", "transformers", "numpy", "Pillow"} <= pinned
    assert not any(s.split("=")[0].split(">")[0] in deps.HOST_PINNED for s in specs)


def test_mediapipe_out_of_range_is_replaced(monkeypatch):
    real = deps.installed
    monkeypatch.setattr(deps, "installed", lambda d: "0.10.30" if d == "mediapipe" else real(d))
    assert [n.dist for n in deps.missing()] == ["mediapipe"]


def test_diffusers_fits_the_host_transformers():
    assert deps.diffusers_need("4.30.2").install == "diffusers==0.31.0"
    assert deps.diffusers_need("4.46.1").install == "diffusers>=0.31.0"


def test_skip_install_is_honoured(installer, monkeypatch):
    monkeypatch.setitem(sys.modules, "launch", types.SimpleNamespace(args=types.SimpleNamespace(skip_install=True)))
    monkeypatch.setattr(deps, "missing", lambda: pytest.fail("must not even look"))
    assert installer.main(runner=lambda *a: pytest.fail("must not install")) == 0


def test_a_failing_pip_is_reported_not_raised(installer, monkeypatch, capsys):
    monkeypatch.setattr(deps, "missing", lambda: [deps.NEEDS[1]])

    def boom(*_):
        raise RuntimeError("no network")

    assert installer.main(runner=boom) == 1
    assert "pip install onnxruntime" in capsys.readouterr().err
