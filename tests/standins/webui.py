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
    "cfg_denoiser", "cfg_after_cfg",
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

    def remove_callbacks_for_function(fn):
        for callbacks in module.callbacks.values():
            while fn in callbacks:
                callbacks.remove(fn)

    module.remove_callbacks_for_function = remove_callbacks_for_function
    return module


def _scripts() -> types.ModuleType:
    module = _module("modules.scripts", current_basedir=None)

    class Script:
        """Stand-in for ``modules.scripts.Script``."""

    module.Script = Script
    module.basedir = lambda: module.current_basedir or os.getcwd()
    return module


def make_modules(data_path, flavour: str = "a1111", cn_models=None, adetailer: bool = False,
                 **cmd_opts) -> dict[str, types.ModuleType]:
    """The stand-in modules, by name; ``cmd_opts`` become attributes of ``modules.shared.cmd_opts``.
    ``flavour`` is "a1111" or "forge"; ``cn_models`` lists ControlNet model names (None: no extension)."""
    try:
        from standins import processing as runtime
    except ImportError:
        from tests.standins import processing as runtime
    data_path = str(data_path)
    opts = {"profile_studio_dir": None, "data_dir": data_path, "nowebui": False, "listen": False, "share": False,
            "server_name": None, "ngrok": None, "api_auth": None, "gradio_auth": None, **cmd_opts}
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
    if flavour == "a1111" and cn_models:  # Mikubill lists the files in models/ControlNet
        folder = Path(data_path) / "models" / "ControlNet"
        folder.mkdir(parents=True, exist_ok=True)
        listed = []
        for name in cn_models:
            path = folder / (name.split(" [")[0] + ".pth")
            path.write_bytes(name.encode() * 40000)
            listed.append(f"{path.stem} [{runtime.model_hash(path)}]")
        cn_models = listed
    caches: dict[str, dict] = {}
    mods["modules.cache"] = _module("modules.cache", caches=caches, dumps=[],
                                    cache=lambda subsection: caches.setdefault(subsection, {}))
    mods["modules.cache"].dump_cache = lambda: mods["modules.cache"].dumps.append(1)
    # the built-in Lora extension's module, imported by the WebUI as a top-level `networks`
    mods["networks"] = _module("networks", refreshed=[])
    mods["networks"].list_available_networks = lambda: mods["networks"].refreshed.append(1)
    extra = runtime.make_runtime(flavour, mods["modules.shared"], cn_models, adetailer)
    runners = extra.pop("_runners")
    mods["modules.scripts"].scripts_txt2img, mods["modules.scripts"].scripts_img2img = runners
    mods.update(extra)
    for name, module in mods.items():
        if name.startswith("modules."):
            setattr(package, name.split(".", 1)[1], module)
    if flavour == "forge":
        import importlib.machinery

        forge = _module("modules_forge", __path__=[])
        forge.__spec__ = importlib.machinery.ModuleSpec("modules_forge", None, is_package=True)
        mods["modules_forge"] = forge
        if cn_models is not None:
            names = ["None", *cn_models]
            state = _module("lib_controlnet.global_state", get_all_controlnet_names=lambda: list(names),
                            update_controlnet_filenames=lambda: None)
            mods["lib_controlnet"] = _module("lib_controlnet", __path__=[], global_state=state)
            mods["lib_controlnet.global_state"] = state
    return mods


def _ours(name: str) -> bool:
    return any(name == top or name.startswith(top + ".")
               for top in ("modules", "modules_forge", "lib_controlnet", "networks", "backend"))


@contextlib.contextmanager
def installed(data_path, **kwargs):
    """Put the stand-in ``modules`` into ``sys.modules``; yields the package; restores afterwards.
    ``kwargs``: ``flavour``, ``cn_models``, ``adetailer`` (see :func:`make_modules`) and cmd_opts."""
    saved = {n: m for n, m in sys.modules.items() if _ours(n)}
    for name in saved:
        del sys.modules[name]
    mods = make_modules(data_path, **kwargs)
    sys.modules.update(mods)
    try:
        yield mods["modules"]
    finally:
        for name in [n for n in sys.modules if _ours(n)]:
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
