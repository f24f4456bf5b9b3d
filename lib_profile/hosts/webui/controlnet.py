"""ControlNet in the WebUI, the parts both flavours share: which model a unit asks for (by WebUI name
``"stem [hash8]"``), what to tell the user when none is there, and the control image as the extensions take it.
Pure functions: tested without a WebUI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from lib_profile.families import SD15, check_compatible, controlnet_family_from_name, family

CN_KEYWORDS = {"pose": "openpose", "tile": "tile"}


def default_models(kind: str, checkpoint_family: str = SD15.name) -> tuple[str, ...]:
    """ControlNet models looked for when the user has not named one (stems, as the ControlNet folder holds them):
    the family data's usual files of ``kind`` for the checkpoint's family, then the bare keyword."""
    return (*family(checkpoint_family).controlnet_files(kind), CN_KEYWORDS[kind])


def model_file(kind: str, checkpoint_family: str = SD15.name) -> str:
    """The file to install for ``kind`` on a ``checkpoint_family`` checkpoint (the family's usual one, as it is
    published: lllyasviel's SD1.5 ``.pth`` files, the SDXL ones as ``.safetensors``)."""
    return family(checkpoint_family).controlnet_files(kind)[0] + (".pth" if checkpoint_family == SD15.name
                                                                  else ".safetensors")


# SD1.5's, as before (kept for callers that name no family)
DEFAULT_CN_MODELS = {kind: default_models(kind) for kind in CN_KEYWORDS}
CN_MODEL_FILES = {kind: model_file(kind) for kind in CN_KEYWORDS}


def model_stem(name: str) -> str:
    """``"control_v11p_sd15_openpose [cab727d4]"`` -> ``"control_v11p_sd15_openpose"``; paths lose folder and suffix."""
    base = name.split(" [", 1)[0].strip()
    return Path(base).stem if any(base.endswith(s) for s in (".pth", ".safetensors", ".ckpt", ".bin")) else \
        Path(base).name


def resolve_model_name(wanted: Optional[str], available: list[str], kind: Optional[str] = None,
                       checkpoint_family: str = SD15.name) -> Optional[str]:
    """The exact WebUI name (``"stem [hash]"``) for a wanted model: an exact name, a stem, or a file path;
    ``None`` asks for the default model of ``kind`` for a ``checkpoint_family`` checkpoint (the family's usual
    files, then any model of that kind whose name says no other family). ``None`` back when nothing matches."""
    names = [a for a in available if a and a != "None"]
    if wanted:
        if wanted in names:
            return wanted
        stem = model_stem(wanted).lower()
        for name in names:
            if model_stem(name).lower() == stem:
                return name
        return None
    if kind not in CN_KEYWORDS:
        return None
    for preferred in default_models(kind, checkpoint_family):
        for name in names:
            if model_stem(name).lower() == preferred.lower():
                return name
    keyword = CN_KEYWORDS[kind]
    for name in names:  # any model of that kind for this family, e.g. "my_openpose_fp16"
        stem = model_stem(name).lower()
        said = controlnet_family_from_name(stem)
        if keyword in stem and (said == checkpoint_family or said is None and checkpoint_family == SD15.name):
            return name
    return None


def family_problem(name: str, checkpoint_family: str = SD15.name) -> Optional[str]:
    """The :func:`lib_profile.families.check_compatible` message when WebUI model ``name``'s file name says it is
    for another family than the checkpoint's (the WebUI lists names, not tensors); None when it fits or says
    nothing."""
    return check_compatible(checkpoint_family, controlnet_family=controlnet_family_from_name(name),
                            controlnet_name=model_stem(name))


def check_family(name: str, checkpoint_family: str) -> None:
    """HostError when WebUI model ``name``'s file name says it is for another family than the checkpoint's (an SDXL
    pose model for an SD1.5 checkpoint, or the reverse). The extensions take the same unit for either family and tell
    SD1.5 from SDXL ControlNets by their tensors (Mikubill's ``build_model_by_guess``, Forge's ``load_controlnet``)."""
    from lib_profile.hosts.base import HostError

    problem = family_problem(name, checkpoint_family)
    if problem:
        raise HostError(problem)


def missing_controlnet_message(kind: str, extension_present: bool, checkpoint_family: str = SD15.name) -> str:
    file = model_file(kind, checkpoint_family)
    if not extension_present:
        return (f"The ControlNet extension is not installed, so the {kind} is guided by the prompt only. Install "
                f"sd-webui-controlnet (A1111; Forge has it built in) and put {file} in models/ControlNet.")
    return f"No {kind} ControlNet model found: put {file} in models/ControlNet and press refresh."


def control_image_array(image: Image.Image) -> np.ndarray:
    """The control map as the ControlNet extensions take it: an RGB HWC uint8 array (a copy)."""
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
