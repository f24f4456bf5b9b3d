"""Which model family the WebUI has loaded: Profile Studio's LoRAs, ControlNets and attention maps are SD1.5's."""

from __future__ import annotations

from typing import Optional

_FAMILY_FLAGS = (("is_sdxl", "SDXL"), ("is_sd2", "SD2"), ("is_sd3", "SD3"), ("is_ssd", "SSD-1B"))
_FAMILY_CLASSES = (("XL", "SDXL"), ("StableDiffusion3", "SD3"), ("Flux", "Flux"), ("Chroma", "Chroma"))


def model_family(sd_model) -> Optional[str]:
    """The family of the WebUI's loaded model when it is not SD1.x (``"SDXL"``, ``"SD2"``, ``"SD3"``, ...), from
    the flags both WebUIs set (``is_sdxl``, ``is_sd2``, ...) and Forge's engine class names; None for SD1.x or for
    no model loaded yet (Forge's ``FakeInitialModel`` before its first generation)."""
    if sd_model is None:
        return None
    for flag, family in _FAMILY_FLAGS:
        if getattr(sd_model, flag, False) is True:
            return family
    name = type(sd_model).__name__
    return next((family for part, family in _FAMILY_CLASSES if part in name), None)
