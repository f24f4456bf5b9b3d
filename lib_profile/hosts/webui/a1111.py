"""The A1111 1.10.1 flavour of the WebUI host (with Mikubill's sd-webui-controlnet when installed).

Differences from Forge (docs/webui-hosts.md, "ControlNet in A1111" and "ControlNet in Forge"): ControlNet's
"no preprocessor" is ``"none"``, ``resize_mode`` must be a string, model names may be stems (we still pass the
exact ``"stem [hash]"``), and ``Txt2Img`` has no ``hr_additional_modules``/``hr_cfg`` fields.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from lib_profile.families import SDXL
from lib_profile.hosts.base import ControlUnit, Txt2ImgRequest
from lib_profile.hosts.webui.controlnet import control_image_array
from lib_profile.hosts.webui.memory import release_freed_memory
from lib_profile.hosts.webui.model_family import model_family

NAME = "a1111"
CN_NONE = "none"
CN_MODEL_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors", ".bin")


def controlnet_unit(unit: ControlUnit, model_name: str) -> dict[str, Any]:
    """A plain-dict unit Mikubill's ControlNet accepts in ``script_args`` (converted with ``from_dict``)."""
    return {
        "enabled": True, "module": CN_NONE, "model": model_name, "weight": unit.weight,
        "image": control_image_array(unit.image), "resize_mode": "Just Resize", "low_vram": False,
        "processor_res": 512, "guidance_start": unit.guidance_start, "guidance_end": unit.guidance_end,
        "pixel_perfect": False, "control_mode": "Balanced", "save_detected_map": False, "hr_option": "Both",
    }


def processing_extras(kind: str, req: Txt2ImgRequest) -> dict[str, Any]:
    return {}


def _controlnet_folders() -> list[Path]:
    from modules import paths, shared

    folders = [Path(paths.models_path) / "ControlNet"]
    ext = Path(getattr(paths, "data_path", paths.script_path)) / "extensions" / "sd-webui-controlnet" / "models"
    folders.append(ext)
    if getattr(shared.cmd_opts, "controlnet_dir", None):
        folders.append(Path(shared.cmd_opts.controlnet_dir))
    extra = getattr(shared.opts, "data", {}).get("control_net_models_path")
    if extra:
        folders.append(Path(extra))
    return folders


def controlnet_models() -> list[str]:
    """``"stem [hash8]"`` names: from the ControlNet extension when it is loaded, else its folders scanned."""
    for name in ("scripts.external_code", "external_code", "lib_controlnet.external_code"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "get_models"):
            try:
                return [m for m in module.get_models(update=True) if m and m != "None"]
            except Exception:  # noqa: BLE001 - fall back to scanning
                break
    from modules import sd_models

    names = []
    for folder in _controlnet_folders():
        if not folder.is_dir():
            continue
        for root, _dirs, files in os.walk(folder):
            for file in sorted(files):
                if file.endswith(CN_MODEL_SUFFIXES):
                    path = os.path.join(root, file)
                    names.append(f"{Path(file).stem} [{sd_models.model_hash(path)}]")
    return names


def free_vram() -> None:
    """Make room for the training subprocess, which loads its own copy of the checkpoint (docs/webui-hosts.md, "Making room for training").
    On a GPU the WebUI's model moves to the CPU. On a CPU-only WebUI that frees nothing and the two copies doubled
    the RAM, so there every loaded model is dropped (``send_model_to_trash``, as A1111 does when it switches
    checkpoints) and :func:`restore_vram` loads the selected one again."""
    from modules import devices, sd_models

    if devices.device.type != "cpu":
        sd_models.unload_model_weights()
        return
    from modules import sd_hijack

    data = sd_models.model_data
    if data.sd_model is not None:
        sd_hijack.model_hijack.undo_hijack(data.sd_model)
    for model in {id(m): m for m in [data.sd_model, *data.loaded_sd_models] if m is not None}.values():
        sd_models.send_model_to_trash(model)
    data.loaded_sd_models.clear()
    data.sd_model = None
    release_freed_memory()


def restore_vram() -> None:
    """Put the WebUI's model back after training: on the GPU, or loaded again from its file where
    :func:`free_vram` dropped it. A reload that fails is printed, not raised (the LoRA is trained by then);
    A1111's next generation loads the model as after any failed load."""
    from modules import sd_models

    model = sd_models.model_data.sd_model
    if model is not None:
        sd_models.send_model_to_device(model)
        return
    try:
        sd_models.reload_model_weights()
        release_freed_memory()  # the checkpoint's state dict, read to load it
    except Exception as e:  # noqa: BLE001 - reported, and the next generation tries again
        print(f"Profile Studio: the WebUI could not load its model back after training ({type(e).__name__}: {e}); "
              "it loads it at the next generation")


def attention(controller, latent_hw: tuple[int, int], images: int):
    """Per-instance attention patches on the loaded model's UNet for one processing call."""
    from modules import script_callbacks, shared

    from lib_profile.hosts.webui.attention import controlled

    return controlled(shared.sd_model.model.diffusion_model, controller, latent_hw, images, script_callbacks)


def token_chunks(text: str) -> list[list[int]]:
    """The prompt's chunks as A1111's hijacked text encoder splits them (``shared.sd_model`` loads the model when
    asked). On SDXL ``cond_stage_model`` is sgm's ``GeneralConditioner``, whose ``embedders`` A1111 wraps one by one
    (``sd_hijack``: CLIP ViT-L first, OpenCLIP ViT-bigG second, with the same BPE vocabulary and comma rule, so the
    same chunks and word positions; only the padding id differs): the first one's chunks."""
    from modules import shared

    model = shared.sd_model
    encoder = model.cond_stage_model.embedders[0] if model_family(model) == SDXL.name else model.cond_stage_model
    chunks, _count = encoder.tokenize_line(text)
    return [list(c.tokens) for c in chunks]


def load_model() -> None:
    """Wait for the model A1111 loads in a thread at startup. ``shared.sd_model`` waits on the loader's lock;
    ``process_images`` does not (its ``reload_model_weights`` sees no model yet and starts a second load, and the
    two loads' global ``load_state_dict`` patches collide: "Cannot copy out of meta tensor", seen for a job sent
    right after startup). When no load is under way, this loads the model, as the first generation would."""
    from modules import shared

    getattr(shared, "sd_model", None)


def lend_model(sd_model, prompts: list[str], clip_skip: int):
    """The loaded model as a Denoiser, the prompts' LoRAs active (:mod:`.a1111_denoiser`)."""
    from lib_profile.hosts.webui import a1111_denoiser

    return a1111_denoiser.lend_model(sd_model, prompts, clip_skip)
