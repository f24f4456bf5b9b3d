"""ControlNet model files for the diffusers host, SD1.5 and SDXL, in the two layouts users download.

* **Original layout** (lllyasviel's ControlNet 1.1 ``control_v11p_sd15_openpose.pth``/``.safetensors``:
  ``control_model.*`` or bare LDM names with an ``input_hint_block``): SD1.5 only, converted by
  :mod:`.ldm_layout`.
* **diffusers layout** (``diffusion_pytorch_model.safetensors`` of a diffusers ControlNet repository, renamed by the
  user: xinsir's ``controlnet-openpose-sdxl-1.0`` and ``controlnet-tile-sdxl-1.0``, thibaud's ``OpenPoseXL2``,
  the ``diffusers_xl_*`` files of lllyasviel's ``sd_control_collection``, lllyasviel's diffusers SD1.5 repos): read
  as they are; the configuration comes from the tensors' shapes (no ``config.json`` is needed, none is fetched).

Which family a file is for is read from its tensors (:func:`lib_profile.families.controlnet_family`: the
cross-attention's text width, SDXL's added size embedding) and checked against the checkpoint's before anything
is built, with a message that names both and a file to use. ControlNet-LoRA (``control-lora``), T2I-Adapter and
ControlLLLite files are other architectures: refused by name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Optional

from lib_profile import families
from lib_profile.hosts.base import HostError
from lib_profile.hosts.diffusers import ldm_layout

#: a tensor only a diffusers-layout ControlNet has (its conditioning image encoder)
DIFFUSERS_MARK = "controlnet_cond_embedding.conv_in.weight"


def _count(sd: Mapping[str, Any], pattern: str) -> int:
    """How many distinct indices ``(\\d+)`` in ``pattern`` the tensor names have."""
    rx = re.compile(pattern)
    return len({m[1] for k in sd if (m := rx.match(k))})


def infer_diffusers_config(sd: Mapping[str, Any], family: families.ModelFamily,
                           unet_config: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """``ControlNetModel`` config of a diffusers-layout state dict, from its shapes. ``family`` gives the attention
    head rule (SDXL: 64 features a head; SD1.5: the UNet's head count, 8); ``unet_config`` (the checkpoint's UNet)
    gives what weights do not hold (SDXL's size-embedding width per number). HostError for a file that is not a
    complete ControlNet."""
    for key in (DIFFUSERS_MARK, "conv_in.weight", "down_blocks.0.resnets.0.conv1.weight"):
        if key not in sd:
            raise HostError(f"This ControlNet file has no {key}: it is incomplete or another kind of model.")
    levels = _count(sd, r"down_blocks\.(\d+)\.")
    widths = [int(sd[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in range(levels)]
    depths = [_count(sd, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.") for i in range(levels)]
    attn = next((k for k in sd if k.endswith("attn2.to_k.weight")), None)
    proj = next((k for k in sd if k.endswith("proj_in.weight")), None)
    hint = sorted(int(m[1]) for k in sd if (m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.weight$", k)))
    base = dict(unet_config or {})
    if family.head_width:
        heads: Any = [max(1, w // family.head_width) for w in widths]
    else:
        heads = base.get("attention_head_dim", 8)
    cfg: dict[str, Any] = {
        "in_channels": int(sd["conv_in.weight"].shape[1]),
        "conditioning_channels": int(sd[DIFFUSERS_MARK].shape[1]),
        "block_out_channels": widths,
        "layers_per_block": _count(sd, r"down_blocks\.0\.resnets\.(\d+)\."),
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        "transformer_layers_per_block": [max(d, 1) for d in depths[:-1]]
        + [max(_count(sd, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\."), 1)],
        "cross_attention_dim": int(sd[attn].shape[1]) if attn else int(base.get("cross_attention_dim", 768)),
        "attention_head_dim": heads,
        "use_linear_projection": bool(proj and sd[proj].ndim == 2),
        "conditioning_embedding_out_channels": [int(sd[DIFFUSERS_MARK].shape[0])]
        + [int(sd[f"controlnet_cond_embedding.blocks.{j}.weight"].shape[0]) for j in hint[1::2]],
        "norm_num_groups": 32,
    }
    if not any(depths):
        raise HostError("This ControlNet file has no cross-attention: not a ControlNet for a text-to-image model.")
    if "add_embedding.linear_1.weight" in sd:  # SDXL: pooled text + 6 size/crop numbers
        cfg.update(addition_embed_type="text_time",
                   addition_time_embed_dim=int(base.get("addition_time_embed_dim") or 256),
                   projection_class_embeddings_input_dim=int(sd["add_embedding.linear_1.weight"].shape[1]))
    return cfg


def _other_architecture(path: Path, sd: Mapping[str, Any]) -> Optional[str]:
    """The name of a control architecture that is not a ControlNet, from the file's tensor names or its name."""
    stem = path.stem.lower()
    if "control-lora" in stem or "control_lora" in stem or any(k.endswith((".up", ".down")) for k in sd):
        return "a ControlNet-LoRA (control-lora)"
    if "t2i" in stem or any(k.startswith(("adapter.", "body.")) for k in sd):
        return "a T2I-Adapter"
    if "lllite" in stem or any("lllite" in k for k in sd):
        return "a ControlLLLite model"
    return None


def load_controlnet(path: str | Path, family: str = families.SD15.name,
                    unet_config: Optional[Mapping[str, Any]] = None):
    """A diffusers ``ControlNetModel`` (float32, CPU) from a single file of either layout (see the module), for a
    checkpoint of ``family``. HostError, naming the file, for: a file of another family (and a file of that
    family to use), another control architecture, an SDXL file in the original layout, a file that is not a
    ControlNet."""
    from diffusers import ControlNetModel

    from lib_profile.hosts.diffusers.checkpoint import _build, _shapes, read_state_dict

    path = Path(path)
    fam = families.family(family)
    sd = read_state_dict(path)
    usual = (fam.controlnet_files("pose") or ("",))[0]
    other = _other_architecture(path, sd)
    if other:
        raise HostError(f"{path.name} is {other}, not a ControlNet; use a ControlNet file for {fam.name} such as "
                        f"{usual}.")
    found = families.controlnet_family({k: tuple(v.shape) for k, v in sd.items()})
    problem = families.check_compatible(fam.name, controlnet_family=found, controlnet_name=path.name)
    if problem:
        raise HostError(problem)
    if DIFFUSERS_MARK in sd:
        cfg = infer_diffusers_config(sd, fam, unet_config)
        return _build(ControlNetModel, cfg, {k: v.float() for k, v in sd.items()})
    prefix = ldm_layout.CONTROL_PREFIX if any(k.startswith(ldm_layout.CONTROL_PREFIX) for k in sd) else ""
    if not any(k.startswith(prefix + "input_hint_block.") for k in sd):
        raise HostError(f"{path.name} is not a ControlNet model (no conditioning image encoder); use a ControlNet "
                        f"file for {fam.name} such as {usual}.")
    if fam.name != families.SD15.name:
        raise HostError(f"{path.name} is a ControlNet in the original (control_model.*) layout, read for "
                        f"{families.SD15.name} only; for {fam.name} use the diffusers-layout file "
                        f"(diffusion_pytorch_model.safetensors of {usual}, renamed to {usual}.safetensors).")
    cfg = ldm_layout.infer_controlnet_config(sd, prefix)
    tensors = ldm_layout.from_ldm(sd, _shapes(ControlNetModel, cfg), ldm_layout.unet_key, cfg, prefix)
    return _build(ControlNetModel, cfg, {k: v.float() for k, v in tensors.items()})


def save_controlnet(path: str | Path, controlnet, metadata: Optional[dict[str, str]] = None,
                    layout: str = "original") -> Path:
    """Write a diffusers ``ControlNetModel`` as one ``.safetensors`` file, atomically: ``layout`` ``"original"``
    (``control_model.*``, SD1.5 models) or ``"diffusers"`` (its own names, as diffusers repositories ship it)."""
    from safetensors.torch import save_file

    from lib_profile.hosts.diffusers.checkpoint import _atomic_save

    path = Path(path)
    if layout == "diffusers":
        tensors = dict(controlnet.state_dict())
    else:
        tensors = ldm_layout.to_ldm(controlnet.state_dict(), ldm_layout.unet_key, dict(controlnet.config),
                                    ldm_layout.CONTROL_PREFIX)
    _atomic_save(save_file, {k: v.contiguous() for k, v in tensors.items()}, path, metadata)
    return path
