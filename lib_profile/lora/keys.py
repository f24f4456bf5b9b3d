"""kohya LoRA module names for SD1.x and SDXL, as A1111 1.10.1 and Forge resolve them.

A kohya key is ``<module key>.<part>`` where the module key has no dots. The parts are ``lora_down.weight``,
``lora_up.weight``, ``alpha`` (and ``lora_mid.weight``).

* SD1.x: ``lora_unet_`` + the diffusers UNet module path with ``.`` -> ``_`` (or the compvis path), ``lora_te_`` +
  the CLIP text model path.
* SDXL (kohya sd-scripts ``sdxl_train_network.py``): ``lora_unet_`` + the SGM (LDM) UNet module path
  (``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``), ``lora_te1_`` + the CLIP ViT-L path and
  ``lora_te2_`` + the OpenCLIP bigG path, both in transformers' names
  (``lora_te2_text_model_encoder_layers_0_self_attn_q_proj``). A1111 1.10.1 (``extensions-builtin/Lora/networks.py``)
  maps ``lora_unet_`` -> ``diffusion_model_`` on the SGM model's modules, ``lora_te1_text_model`` ->
  ``0_transformer_text_model`` and ``lora_te2_`` to open_clip's names (``self_attn`` -> ``attn``, ``mlp_fc1`` ->
  ``mlp_c_fc``, q/k/v into the fused ``attn``); Forge (``packages_3rdparty/comfyui_lora_collection/lora.py``) maps
  ``lora_unet_`` + every ``diffusion_model.*.weight`` name and ``lora_te1_``/``lora_te2_`` +
  ``text_model_encoder_layers_N_`` + ``self_attn_{q,k,v,out}_proj`` / ``mlp_fc1`` / ``mlp_fc2``.
"""

from __future__ import annotations

from typing import Any, Mapping

from lib_profile.hosts.diffusers import ldm_layout

UNET = "lora_unet_"
TE = "lora_te_"
TE1 = "lora_te1_"
TE2 = "lora_te2_"


def unet_module_key(diffusers_name: str) -> str:
    return UNET + diffusers_name.replace(".", "_")


def unet_compvis_key(diffusers_name: str, cfg: Mapping[str, Any]) -> str:
    """The compvis form (``lora_unet_input_blocks_1_1_...``), also accepted by both hosts."""
    return UNET + ldm_layout.unet_key(diffusers_name + ".weight", cfg).removesuffix(".weight").replace(".", "_")


def te_module_key(hf_name: str) -> str:
    return TE + hf_name.replace(".", "_")


def sdxl_unet_module_key(diffusers_name: str, cfg: Mapping[str, Any]) -> str:
    """kohya's SDXL UNet key of a diffusers module path: ``lora_unet_`` + its SGM path, ``.`` -> ``_``
    (``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q`` ->
    ``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``). ``cfg``: the UNet's config. KeyError for a
    module with no SGM name."""
    return unet_compvis_key(diffusers_name, cfg)


def te1_module_key(hf_name: str) -> str:
    """kohya's SDXL key of a CLIP ViT-L module (``text_model.encoder.layers.0.self_attn.q_proj`` ->
    ``lora_te1_text_model_encoder_layers_0_self_attn_q_proj``)."""
    return TE1 + hf_name.replace(".", "_")


def te2_module_key(hf_name: str) -> str:
    """kohya's SDXL key of an OpenCLIP bigG module in transformers' names (``lora_te2_text_model_...``)."""
    return TE2 + hf_name.replace(".", "_")


def module_table(unet=None, text_encoder=None, text_encoder_2=None) -> dict[str, Any]:
    """kohya module key -> torch module, for every Linear/Conv2d of the given models (both UNet forms);
    ``text_encoder_2``: SDXL's second encoder, under ``lora_te2_`` (kohya's SDXL names)."""
    import torch

    table: dict[str, Any] = {}
    if unet is not None:
        cfg = dict(unet.config)
        for name, module in unet.named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                table[unet_module_key(name)] = module
                try:
                    table[unet_compvis_key(name, cfg)] = module
                except KeyError:
                    pass
    if text_encoder is not None:
        for name, module in text_encoder.named_modules():
            if isinstance(module, torch.nn.Linear):
                table[te_module_key(name)] = module
                table[te1_module_key(name)] = module
    if text_encoder_2 is not None:
        for name, module in text_encoder_2.named_modules():
            if isinstance(module, torch.nn.Linear):
                table[te2_module_key(name)] = module
    return table
