"""Stand-ins for how A1111 1.10.1 and Forge hold the loaded checkpoint (``modules.sd_models``, ``modules.devices``,
``modules.sd_hijack``, ``backend.memory_management``), enough to see where the model's memory goes.

Read from the real code (kklouzal/stable-diffusion-webui 82a973c0 and Forge dfdcbab6, ``modules/sd_models.py``):

* A1111: ``model_data`` holds ``sd_model`` and ``loaded_sd_models``; ``unload_model_weights`` only moves the model to
  ``devices.cpu`` (so on a CPU-only WebUI it frees nothing); ``send_model_to_trash`` moves it to the meta device;
  ``reload_model_weights`` loads the selected checkpoint when ``model_data.sd_model`` is None.
* Forge: ``model_data`` holds ``sd_model`` (a ``FakeInitialModel`` before the first load) and ``forge_hash``;
  ``unload_all_models`` moves what its memory manager holds to the offload device (the CPU); ``forge_model_reload``
  loads again only when ``forge_hash`` differs from the loading parameters.
"""

from __future__ import annotations

import sys
import types


class Model:
    """A loaded checkpoint: ``device`` says where its weights are; ``weakref`` to it tells whether it was freed."""

    def __init__(self, name: str, device: str):
        self.name, self.device, self.lowvram = name, device, False
        self.sd_checkpoint_info = types.SimpleNamespace(filename=name, title=name)

    def to(self, device):
        self.device = str(device)
        return self


class FakeInitialModel:
    def __init__(self):
        self.cond_stage_model = None
        self.chunk_length = 75


def install(flavour: str, device: str) -> dict[str, list]:
    """Give the installed stand-in ``modules`` (in ``sys.modules``) a loaded checkpoint on ``device`` ("cpu" or
    "cuda"); ``shared.sd_model`` reads ``model_data`` as in the WebUI. Returns the call log."""
    mods = sys.modules
    log: dict[str, list] = {"loads": [], "unloads": [], "trash": [], "undo_hijack": []}
    sd_models, shared = mods["modules.sd_models"], mods["modules.shared"]
    devices = types.ModuleType("modules.devices")
    devices.device, devices.cpu = types.SimpleNamespace(type=device), "cpu"
    mods["modules.devices"] = devices
    mods["modules"].devices = devices

    def load(name="model.safetensors"):
        log["loads"].append(name)
        return Model(name, device)

    if flavour == "forge":
        data = types.SimpleNamespace(sd_model=load(), forge_hash="{'checkpoint_info': 'model.safetensors'}")
        memory = types.ModuleType("backend.memory_management")
        memory.current_loaded_models = [data.sd_model]

        def unload_all_models():
            log["unloads"].append(1)
            for m in memory.current_loaded_models:
                m.to("cpu")  # the offload device
            memory.current_loaded_models.clear()

        def forge_model_reload():
            current = "{'checkpoint_info': 'model.safetensors'}"
            if data.forge_hash != current:
                data.sd_model = load()
                memory.current_loaded_models.append(data.sd_model)
                data.forge_hash = current
            return data.sd_model, True

        memory.unload_all_models = unload_all_models
        memory.soft_empty_cache = lambda: None
        mods["backend"] = types.ModuleType("backend")
        mods["backend"].__path__ = []
        mods["backend"].memory_management = memory
        mods["backend.memory_management"] = memory
        sd_models.unload_model_weights = lambda sd_model=None, info=None: unload_all_models()
        sd_models.forge_model_reload = forge_model_reload
        sd_models.FakeInitialModel = FakeInitialModel
    else:
        data = types.SimpleNamespace(sd_model=load(), loaded_sd_models=[])
        data.loaded_sd_models.append(data.sd_model)

        def unload_model_weights(sd_model=None, info=None):
            log["unloads"].append(1)
            (sd_model or data.sd_model).to("cpu")

        def send_model_to_trash(m):
            log["trash"].append(m.name)
            m.to("meta")

        def send_model_to_device(m):
            m.to(device)

        def reload_model_weights(sd_model=None, info=None, forced_reload=False):
            if data.sd_model is None:
                data.sd_model = load()
                data.loaded_sd_models.insert(0, data.sd_model)
            return data.sd_model

        sd_models.unload_model_weights = unload_model_weights
        sd_models.send_model_to_trash = send_model_to_trash
        sd_models.send_model_to_device = send_model_to_device
        sd_models.reload_model_weights = reload_model_weights
        hijack = types.ModuleType("modules.sd_hijack")
        hijack.model_hijack = types.SimpleNamespace(undo_hijack=lambda m: log["undo_hijack"].append(m.name))
        mods["modules.sd_hijack"] = hijack
        mods["modules"].sd_hijack = hijack
    sd_models.model_data = data
    shared.__dict__.pop("sd_model", None)
    shared.__class__ = _Shared
    return log


class _Shared(types.ModuleType):
    """``modules.shared`` whose ``sd_model`` is ``sd_models.model_data.sd_model`` (the WebUI's ``shared_items``)."""

    @property
    def sd_model(self):
        return sys.modules["modules.sd_models"].model_data.sd_model

    @sd_model.setter
    def sd_model(self, value):
        sys.modules["modules.sd_models"].model_data.sd_model = value
