"""kohya LoRA module names for SD1.x, as A1111 1.10.1 and Forge resolve them.

A kohya key is ``<module key>.<part>`` where the module key has no dots: ``lora_unet_`` + the
diffusers UNet module path with ``.`` -> ``_`` (or the compvis path), ``lora_te_`` + the CLIP text
model path. The parts are ``lora_down.weight``, ``lora_up.weight``, ``alpha`` (and ``lora_mid.weight``).
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
                table[TE1 + name.replace(".", "_")] = module
    if text_encoder_2 is not None:
        for name, module in text_encoder_2.named_modules():
            if isinstance(module, torch.nn.Linear):
                table[TE2 + name.replace(".", "_")] = module
    return table
