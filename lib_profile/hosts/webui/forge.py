"""The Forge flavour of the WebUI host (built-in ``sd_forge_controlnet``).

Differences from A1111 (docs/webui-hosts.md, "Processing objects" and "ControlNet in Forge"): ControlNet's
"no preprocessor" is ``"None"``, the model must be the exact ``"stem [hash8]"`` key of
``lib_controlnet.global_state.get_all_controlnet_names()``, the control image goes in as an HWC uint8
array (Forge 2's ``get_input_data`` compares ``unit.image < 5``, so the ``{"image", "mask"}`` pair older Forge
took fails there with a TypeError; a base64 string is the other form it takes), and ``Txt2Img`` needs
``hr_additional_modules`` and ``hr_cfg`` (else a hires pass raises TypeError or runs at CFG 1).
"""

from __future__ import annotations

import importlib
from typing import Any, Optional

from lib_profile.families import SDXL
from lib_profile.hosts.base import ControlUnit, HostError, Txt2ImgRequest
from lib_profile.hosts.webui.controlnet import control_image_array
from lib_profile.hosts.webui.memory import release_freed_memory
from lib_profile.hosts.webui.model_family import model_family

NAME = "forge"
CN_NONE = "None"


def controlnet_unit(unit: ControlUnit, model_name: str) -> dict[str, Any]:
    return {
        "enabled": True, "module": CN_NONE, "model": model_name, "weight": unit.weight,
        "image": control_image_array(unit.image), "resize_mode": "Just Resize",
        "processor_res": 512, "guidance_start": unit.guidance_start, "guidance_end": unit.guidance_end,
        "pixel_perfect": False, "control_mode": "Balanced", "save_detected_map": False, "hr_option": "Both",
    }


def processing_extras(kind: str, req: Txt2ImgRequest) -> dict[str, Any]:
    if kind == "txt2img":
        return {"hr_additional_modules": ["Use same choices"], "hr_cfg": req.cfg_scale}
    return {}


def controlnet_models() -> list[str]:
    try:
        state = importlib.import_module("lib_controlnet.global_state")
    except ImportError:
        return []
    if hasattr(state, "update_controlnet_filenames"):
        state.update_controlnet_filenames()
    return [m for m in state.get_all_controlnet_names() if m and m != "None"]


def free_vram() -> None:
    """Forge unloads everything from its memory manager (to the CPU) and loads the model back by itself when it
    next samples. On a CPU-only Forge that frees nothing and the trainer's own copy doubled the RAM, so there the
    model is dropped too: Forge is left as after its start (a ``FakeInitialModel``, no loading hash), and its next
    generation loads the checkpoint again (``forge_model_reload``)."""
    from modules import devices, sd_models

    sd_models.unload_model_weights()
    if devices.device.type != "cpu":
        return
    data = sd_models.model_data
    data.sd_model = sd_models.FakeInitialModel()
    data.forge_hash = ""
    release_freed_memory()


def restore_vram() -> None:
    pass


def attention(controller, latent_hw: tuple[int, int], images: int):
    """Attention-replace patches on Forge's UNet patcher, applied by a script object in the runner."""
    from modules import script_callbacks, scripts

    from lib_profile.hosts.webui.forge_attention import controlled

    return controlled(controller, latent_hw, script_callbacks, scripts.Script)


def token_chunks(text: str) -> Optional[list[list[int]]]:
    """The prompt's chunks by Forge's own text engine (SD1.5: ``text_processing_engine``; SDXL: CLIP ViT-L's
    ``text_processing_engine_l``, whose chunks and word positions ViT-bigG's ``_g`` shares); None while Forge has
    loaded no model yet (before its first generation ``shared.sd_model`` is a ``FakeInitialModel`` without one;
    docs/webui-hosts.md, "The model object")."""
    from modules import shared

    model = shared.sd_model
    engine = getattr(model, "text_processing_engine_l" if model_family(model) == SDXL.name
                     else "text_processing_engine", None)
    if engine is None:
        return None
    chunks, _count = engine.tokenize_line(text)
    return [list(c.tokens) for c in chunks]


def load_model() -> None:
    """Load the selected checkpoint now, as Forge's ``process_images`` does first (a no-op once it is loaded)."""
    from modules import sd_models

    try:
        sd_models.forge_model_reload()
    except Exception as e:  # e.g. no checkpoint selected yet: Forge's own KeyError says little
        raise HostError(f"Forge could not load the selected checkpoint ({type(e).__name__}: {e}); pick an SD1.5 "
                        "or SDXL checkpoint at the top of the page and try again") from e


def lend_model(sd_model, prompts: list[str], clip_skip: int):
    """The loaded model as a Denoiser, the prompts' LoRAs active (:mod:`.forge_denoiser`)."""
    from lib_profile.hosts.webui import forge_denoiser

    return forge_denoiser.lend_model(sd_model, prompts, clip_skip)
