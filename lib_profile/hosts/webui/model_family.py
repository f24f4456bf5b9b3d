"""Which model family the WebUI has loaded (or selected): Profile Studio's LoRAs, ControlNets and attention maps
are SD1.5's.

Forge loads its model lazily: until the first generation (and after a checkpoint is picked in its menu, until the
next one) ``shared.sd_model`` is a stand-in without the ``is_sdxl``/``is_sd2`` flags, so an SDXL checkpoint would
pass the SD1.5 check and fail deep inside the run. The selected checkpoint's ``.safetensors`` header names its
tensors, which tell the families apart (:func:`selected_family`, :mod:`lib_profile.families`; the header
alone is read: no tensor is loaded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from lib_profile.families import FAMILIES, family_from_keys


def model_family(sd_model) -> Optional[str]:
    """The family of the WebUI's loaded model when it is not SD1.x (``"SDXL"``, ``"SD2"``, ``"SD3"``, ...), from
    the flags both WebUIs set (``is_sdxl``, ``is_sd2``, ...) and Forge's engine class names; None for SD1.x or for
    no model loaded yet (Forge's ``FakeInitialModel`` before its first generation)."""
    if sd_model is None:
        return None
    for family in FAMILIES:
        if any(getattr(sd_model, flag, False) is True for flag in family.webui_flags):
            return family.name
    name = type(sd_model).__name__
    return next((family.name for family in FAMILIES if any(part in name for part in family.webui_classes)), None)


def checkpoint_family(path: str | Path) -> Optional[str]:
    """``"SDXL"``, ``"SD2"``, ``"SD3"`` or ``"Flux"`` for a ``.safetensors`` checkpoint of that family; None for
    SD1.x, for other formats (``.ckpt`` cannot be read without unpickling it) and for a file that cannot be read
    (the WebUI's own load reports that)."""
    if Path(path).suffix.lower() != ".safetensors":
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as handle:
            keys = list(handle.keys())
    except Exception:  # noqa: BLE001 - a broken file is the WebUI's to report when it loads it
        return None
    return family_from_keys(keys)


def selected_family(sd_models: Any, sd_model: Any) -> Optional[str]:
    """The family of the checkpoint the WebUI has selected (``sd_models.select_checkpoint()``, both WebUIs) when it
    is not the loaded model's file; None when it is (the loaded model's flags tell), or when none can be read."""
    try:
        info = sd_models.select_checkpoint()
    except Exception:  # noqa: BLE001 - no checkpoint at all: the WebUI's load says so
        return None
    path = getattr(info, "filename", None)
    loaded = getattr(getattr(sd_model, "sd_checkpoint_info", None), "filename", None)
    if not path or path == loaded:
        return None
    return checkpoint_family(path)
