"""SDXL's single-file layout (Stability's SGM ``generative-models``, what A1111 and Forge load), from diffusers parts.

Tensor names under four prefixes: ``model.diffusion_model.*`` (the UNet, the same LDM block names as SD1.x plus
``label_emb`` for the size/crop conditioning: :func:`ldm_layout.unet_key`), ``conditioner.embedders.0.transformer.*``
(CLIP ViT-L/14 with transformers' names), ``conditioner.embedders.1.model.*`` (OpenCLIP ViT-bigG/14 with open_clip's
names: fused ``attn.in_proj_weight``, ``mlp.c_fc``, a ``text_projection`` matrix applied as ``x @ P``) and
``first_stage_model.*`` (the VAE, as SD1.x). This is the inverse of diffusers'
``loaders/single_file_utils.py`` (``convert_ldm_unet_checkpoint``, ``convert_ldm_clip_checkpoint``,
``convert_open_clip_checkpoint``, ``convert_ldm_vae_checkpoint``); the tests check the round trip through them is
exact.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from lib_profile.hosts.diffusers import ldm_layout

UNET_PREFIX = ldm_layout.UNET_PREFIX
VAE_PREFIX = ldm_layout.VAE_PREFIX
CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
OPENCLIP_PREFIX = "conditioner.embedders.1.model."

_OPENCLIP_TOP = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
_OPENCLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                   "self_attn.out_proj": "attn.out_proj"}


def openclip_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A transformers ``CLIPTextModelWithProjection`` state dict -> open_clip names (no prefix): q/k/v fused into
    ``attn.in_proj_weight``/``in_proj_bias`` (rows q, k, v), ``text_projection`` transposed (width x projection)."""
    import torch

    out: dict[str, Any] = {}
    fused: dict[str, dict[str, Any]] = {}
    for key, tensor in state_dict.items():
        if key.endswith("position_ids"):
            continue
        if key in _OPENCLIP_TOP:
            out[_OPENCLIP_TOP[key]] = tensor
            continue
        if key == "text_projection.weight":
            out["text_projection"] = tensor.T.contiguous()
            continue
        m = re.match(r"text_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$", key)
        if not m:
            raise KeyError(f"no open_clip name for text encoder parameter {key}")
        layer, part, kind = m[1], m[2], m[3]
        base = f"transformer.resblocks.{layer}."
        if part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            fused.setdefault(f"{base}attn.in_proj_{kind}", {})[part[-6]] = tensor
        else:
            out[base + _OPENCLIP_LAYER[part] + "." + kind] = tensor
    for name, parts in fused.items():
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def to_sgm(unet, vae, text_encoder, text_encoder_2) -> dict[str, Any]:
    """diffusers SDXL parts (``UNet2DConditionModel`` with ``addition_embed_type="text_time"``, ``AutoencoderKL``,
    ``CLIPTextModel``, ``CLIPTextModelWithProjection``) -> one SGM-layout state dict (contiguous tensors)."""
    out: dict[str, Any] = {}
    out.update(ldm_layout.to_ldm(unet.state_dict(), ldm_layout.unet_key, dict(unet.config), UNET_PREFIX))
    out.update(ldm_layout.to_ldm(vae.state_dict(), ldm_layout.vae_key, dict(vae.config), VAE_PREFIX))
    out.update(ldm_layout.to_ldm(text_encoder.state_dict(), ldm_layout.text_key, None, CLIP_L_PREFIX))
    out.update({OPENCLIP_PREFIX + k: v for k, v in openclip_state_dict(text_encoder_2.state_dict()).items()})
    return {k: v.contiguous() for k, v in out.items()}
