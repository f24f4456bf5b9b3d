"""A Stable Diffusion checkpoint's model family, from its tensor names alone (original single-file layout).

Both hosts refuse what is not SD1.x before loading it: the diffusers host from the state dict it reads
(:func:`lib_profile.hosts.diffusers.ldm_layout.check_sd1`), the WebUI host from the header of the checkpoint the
WebUI has selected but not loaded yet (:mod:`lib_profile.hosts.webui.model_family`).
"""

from __future__ import annotations

from typing import Iterable, Optional

# (key part, family): the first family whose key part some tensor name contains
FAMILY_KEYS = (
    ("conditioner.embedders.", "SDXL"),        # SDXL base and refiner (SGM's conditioner)
    ("cond_stage_model.model.", "SD2"),        # OpenCLIP text encoder (SD1.x has cond_stage_model.transformer.)
    ("joint_blocks.", "SD3"),                  # MMDiT
    ("double_blocks.", "Flux"),                # Flux and Chroma
)


def family_from_keys(keys: Iterable[str]) -> Optional[str]:
    """``"SDXL"``, ``"SD2"``, ``"SD3"`` or ``"Flux"`` for a checkpoint whose tensor names show that family; None
    for SD1.x (and for anything these names do not tell apart)."""
    keys = list(keys)
    return next((family for part, family in FAMILY_KEYS if any(part in key for key in keys)), None)
