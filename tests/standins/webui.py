"""A stand-in for the WebUI's ``modules`` package (A1111 1.10.1 / Forge), just big enough for tests.

``installed(...)`` puts it into ``sys.modules`` and takes it out again afterwards;
``load_script(path)`` imports a ``scripts/*.py`` file the way A1111's ``load_scripts`` does.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import types
from pathlib import Path

CALLBACK_CATEGORIES = (
    "app_started", "ui_tabs", "ui_settings", "before_ui", "model_loaded", "script_unloaded",
)


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def _script_callbacks() -> types.ModuleType:
    """``modules.script_callbacks`` whose ``on_<category>`` record callbacks in ``callbacks[category]``."""
    module = _module("modules.script_callbacks", callbacks={c: [] for c in CALLBACK_CATEGORIES})

    def make_on(category):
        def on(callback, *, name=None):
            module.callbacks[category].append(callback)
        on.__name__ = f"on_{category}"
        return on

    for category in CALLBACK_CATEGORIES:
        setattr(module, f"on_{category}", make_on(category))
    return module


def _scripts() -> types.ModuleType:
    module = _module("modules.scripts", current_basedir=None)

    class Script:
        """Stand-in for ``modules.scripts.Script``."""

    module.Script = Script
    module.basedir = lambda: module.current_basedir or os.getcwd()
    return module


def make_modules(data_path, **cmd_opts) -> dict[str, types.ModuleType]:
    """The stand-in modules, by name; ``cmd_opts`` become attributes of ``modules.shared.cmd_opts``."""
    data_path = str(data_path)
    opts = {"profile_studio_dir": None, "data_dir": data_path, "nowebui": False, **cmd_opts}
    package = _module("modules", __path__=[])
    mods = {
        "modules": package,
        "modules.script_callbacks": _script_callbacks(),
        "modules.scripts": _scripts(),
        "modules.shared": _module("modules.shared", cmd_opts=argparse.Namespace(**opts)),
        "modules.paths": _module(
            "modules.paths",
            script_path=data_path,
            data_path=data_path,
            models_path=os.path.join(data_path, "models"),
        ),
    }
    for name, module in mods.items():
        if name != "modules":
            setattr(package, name.split(".", 1)[1], module)
    return mods


@contextlib.contextmanager
def installed(data_path, **cmd_opts):
    """Put the stand-in ``modules`` into ``sys.modules``; yields the package; restores afterwards."""
    saved = {n: m for n, m in sys.modules.items() if n == "modules" or n.startswith("modules.")}
    for name in saved:
        del sys.modules[name]
    mods = make_modules(data_path, **cmd_opts)
    sys.modules.update(mods)
    try:
        yield mods["modules"]
    finally:
        for name in [n for n in sys.modules if n == "modules" or n.startswith("modules.")]:
            del sys.modules[name]
        sys.modules.update(saved)


def load_script(path) -> types.ModuleType:
    """Import a ``scripts/*.py`` like A1111: bare module name, extension dir on sys.path only meanwhile."""
    path = Path(path)
    basedir = str(path.parent.parent)
    scripts = sys.modules["modules.scripts"]
    saved_path = list(sys.path)
    sys.path.insert(0, basedir)
    scripts.current_basedir = basedir
    try:
        spec = importlib.util.spec_from_file_location(path.name, str(path))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path[:] = saved_path
        scripts.current_basedir = None
