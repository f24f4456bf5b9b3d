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
    assert [specs for specs, _c in calls] == [[deps.MEDIAPIPE_INSTALL], ["pillow-heif==0.16.0"]]  # one run each
    specs, constraints = sum((s for s, _c in calls), []), calls[0][1]
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


def test_one_package_that_cannot_install_does_not_keep_the_others_out(installer, monkeypatch, capsys):
    real = deps.installed
    monkeypatch.setattr(deps, "installed", lambda d: None if d in ("ultralytics", "pillow-heif", "torchsde")
                        else real(d))
    done = []

    def pip(specs, constraints):
        if specs[0].startswith("ultralytics"):
            raise RuntimeError("ResolutionImpossible: httpx")
        done.extend(specs)

    assert installer.main(runner=pip) == 1
    assert done == ["pillow-heif==0.16.0", "torchsde"]
    err = capsys.readouterr().err
    assert "could not install ultralytics" in err and 'pip install "ultralytics==8.4.100"' in err
    assert "pillow-heif" not in err


@pytest.mark.parametrize("protobuf,installs_mediapipe", [("3.20.0", False), ("3.20.3", False), ("4.25.3", True),
                                                         ("5.29.0", True), (None, True)])
def test_mediapipe_is_not_installed_beside_a_protobuf_it_cannot_run_with(monkeypatch, protobuf, installs_mediapipe):
    """A1111 1.10.1 and Forge pin protobuf 3.20.0 and restore it at every normal start: installing mediapipe there
    would pull protobuf 4 for the WebUI to take back, and mediapipe would still fail (dlib finds the faces)."""
    real = deps.installed
    monkeypatch.setattr(deps, "installed", lambda d: protobuf if d == "protobuf" else None if d == "mediapipe"
                        else real(d))
    assert ("mediapipe" in [n.dist for n in deps.missing()]) is installs_mediapipe


def test_a_failing_pip_is_reported_not_raised(installer, monkeypatch, capsys):
    monkeypatch.setattr(deps, "missing", lambda: [deps.NEEDS[1]])

    def boom(*_):
        raise RuntimeError("no network")

    assert installer.main(runner=boom) == 1
    assert "pip install \"onnxruntime>=1.16\"" in capsys.readouterr().err
