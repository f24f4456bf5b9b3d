"""Load an SDXL single-file checkpoint (Stability's SGM layout, as A1111 and Forge load it) into diffusers, offline.

The tensors are renamed by diffusers' own ``loaders/single_file_utils`` converters (``convert_ldm_unet_checkpoint``,
``convert_ldm_vae_checkpoint``, ``convert_ldm_clip_checkpoint``, ``convert_open_clip_checkpoint``: the inverse of
:mod:`.sgm_layout`); the configs are read off the tensor shapes and :data:`lib_profile.families.SDXL` (attention heads
64 features wide, the VAE's scaling factor, the native size), never fetched: no hub, no network. A real SDXL base
file (or a fine-tune: Pony, Illustrious, photoreal models) and the tiny test model load through the same path.
Both tokenizers are the CLIP vocabulary the project builds from open_clip's (:mod:`lib_profile.prompts.tokenizer`);
the second pads with ``!`` as SDXL's second tokenizer does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

from lib_profile import families
from lib_profile.hosts.base import HostError
from lib_profile.hosts.diffusers import ldm_layout
from lib_profile.hosts.diffusers.checkpoint import SD15, _build, read_state_dict
from lib_profile.hosts.diffusers.sgm_layout import CLIP_L_PREFIX, OPENCLIP_PREFIX, UNET_PREFIX, VAE_PREFIX

FAMILY = families.SDXL


@dataclass
class SDXL(SD15):
    """A loaded SDXL model: :class:`~.checkpoint.SD15`'s parts (``text_encoder`` is CLIP ViT-L) plus OpenCLIP bigG as
    ``text_encoder_2`` (``CLIPTextModelWithProjection``) and its tokenizer ``tokenizer_2``."""

    text_encoder_2: Any = None
    tokenizer_2: Any = None
    family: ClassVar[str] = FAMILY.name


def _heads(width: int) -> int:
    return max(1, int(width) // FAMILY.head_width)


def _count(sd: Mapping[str, Any], pattern: str) -> int:
    return len({m[1] for k in sd if (m := re.match(pattern, k))})


def infer_configs(sd: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Configs of ``unet``, ``vae``, ``text_encoder`` (CLIP-L), ``text_encoder_2`` (bigG) from an SGM state dict's
    shapes. HostError for what is not an SDXL base-architecture checkpoint (a refiner, an inpainting UNet)."""
    if not any(k.startswith(CLIP_L_PREFIX) for k in sd):
        raise HostError("This SDXL checkpoint has no CLIP ViT-L text encoder (conditioner.embedders.0.transformer): "
                        "it is an SDXL refiner, which Profile Studio does not run; pick an SDXL base-architecture "
                        "checkpoint (SDXL base, Pony, Illustrious or a photoreal fine-tune).")
    for key in (OPENCLIP_PREFIX + "text_projection", OPENCLIP_PREFIX + "token_embedding.weight",
                UNET_PREFIX + "label_emb.0.0.weight"):
        if key not in sd:
            raise HostError(f"This SDXL checkpoint lacks {key}: the file is incomplete or not an SDXL base model.")
    projection = sd[OPENCLIP_PREFIX + "text_projection"]  # width x pooled width (open_clip applies x @ P)
    vocab, width = (int(n) for n in sd[OPENCLIP_PREFIX + "token_embedding.weight"].shape)
    text_2 = {
        "vocab_size": vocab, "hidden_size": width, "num_attention_heads": _heads(width),
        "intermediate_size": int(sd[OPENCLIP_PREFIX + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        "num_hidden_layers": _count(sd, re.escape(OPENCLIP_PREFIX) + r"transformer\.resblocks\.(\d+)\."),
        "max_position_embeddings": int(sd[OPENCLIP_PREFIX + "positional_embedding"].shape[0]),
        "projection_dim": int(projection.shape[1]), "hidden_act": "gelu", "layer_norm_eps": 1e-5,
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,  # pooled at the highest id (EOS), as open_clip
    }
    text = ldm_layout.infer_text_config(sd, CLIP_L_PREFIX)
    text["num_attention_heads"] = _heads(text["hidden_size"])

    enc = ldm_layout._encoder(sd, UNET_PREFIX)
    per, levels = enc["layers_per_block"] + 1, len(enc["block_out_channels"])
    depths = [_count(sd, re.escape(UNET_PREFIX) + rf"input_blocks\.{1 + i * per}\.1\.transformer_blocks\.(\d+)\.") or 1
              for i in range(levels)]
    label = sd[UNET_PREFIX + "label_emb.0.0.weight"]  # (time embedding, pooled + 6 x size/crop embedding)
    pooled = text_2["projection_dim"]
    unet = {
        **enc,
        "sample_size": FAMILY.native_size // 8,
        "out_channels": int(sd[UNET_PREFIX + "out.2.weight"].shape[0]),
        "up_block_types": ["CrossAttnUpBlock2D" if UNET_PREFIX + f"output_blocks.{i * per}.1.proj_in.weight" in sd
                           else "UpBlock2D" for i in range(levels)],
        "transformer_layers_per_block": depths,
        "attention_head_dim": [_heads(c) for c in enc["block_out_channels"]],
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": (int(label.shape[1]) - pooled) // 6,
        "addition_embed_type_num_heads": 64,
        "projection_class_embeddings_input_dim": int(label.shape[1]),
    }
    if unet["in_channels"] != 4:
        raise HostError(f"This SDXL checkpoint's UNet takes {unet['in_channels']} input channels (an inpainting or "
                        "instruct model); use a regular SDXL checkpoint.")
    if unet["cross_attention_dim"] != text["hidden_size"] + width:
        raise HostError(f"This SDXL checkpoint's UNet reads {unet['cross_attention_dim']}-wide text but its encoders "
                        f"give {text['hidden_size']} + {width}: the file is not an SDXL model this loader understands.")
    vae = {**ldm_layout.infer_vae_config(sd, VAE_PREFIX), "scaling_factor": FAMILY.vae_scaling_factor,
           "sample_size": FAMILY.native_size, "force_upcast": True}  # SDXL's VAE overflows in float16
    return {"unet": unet, "vae": vae, "text_encoder": text, "text_encoder_2": text_2}


def _build_text(cls, cfg: dict[str, Any], tensors: Mapping[str, Any]):
    """A transformers text model of ``cfg`` with ``tensors`` as its weights (built on the meta device, no random
    init); ``position_ids`` (not in every file or transformers version) is set to 0..n-1."""
    import torch
    from transformers import CLIPTextConfig

    with torch.device("meta"):
        model = cls(CLIPTextConfig(**cfg))
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise HostError(f"Text encoder tensors do not match {cls.__name__}: missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}")
    embeddings = model.text_model.embeddings
    if embeddings.position_ids.is_meta:
        ids = torch.arange(cfg["max_position_embeddings"])[None]
        persistent = "position_ids" not in embeddings._non_persistent_buffers_set
        embeddings.register_buffer("position_ids", ids, persistent=persistent)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise HostError(f"{cls.__name__} has tensors the file does not fill: {left[:3]}")
    return model.eval().requires_grad_(False)


def load_sdxl(path: str | Path, tokenizer_dir: str | Path, sd: Mapping[str, Any] | None = None) -> SDXL:
    """Load an SDXL single-file checkpoint into diffusers/transformers modules on the CPU in float32. ``sd``: its
    tensors when already read. HostError for a file that is not a complete SDXL base-architecture checkpoint."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders import single_file_utils as sfu
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTextConfig

    from lib_profile.prompts.tokenizer import load_tokenizer, load_tokenizer_2

    path = Path(path)
    sd = read_state_dict(path) if sd is None else sd
    if families.checkpoint_family(sd.keys()) != FAMILY.name:
        raise HostError(f"{path.name} is not an SDXL checkpoint (no conditioner.embedders.* tensors)")
    cfg = infer_configs(sd)
    try:
        unet_t = sfu.convert_ldm_unet_checkpoint(sd, cfg["unet"])
        vae_t = sfu.convert_ldm_vae_checkpoint(sd, cfg["vae"])
        text_t = sfu.convert_ldm_clip_checkpoint({k: v for k, v in sd.items() if k.startswith(CLIP_L_PREFIX)})
        with torch.device("meta"):
            shape_2 = CLIPTextModelWithProjection(CLIPTextConfig(**cfg["text_encoder_2"]))
        text_2_t = sfu.convert_open_clip_checkpoint(shape_2, sd, prefix=OPENCLIP_PREFIX)
    except (KeyError, IndexError, ValueError, RuntimeError) as exc:
        raise HostError(f"Cannot convert SDXL checkpoint {path.name}: {type(exc).__name__}: {exc}. Is it a complete "
                        "SDXL base-architecture checkpoint?") from exc
    del sd
    as_f32 = lambda d: {k: v.float() for k, v in d.items()}  # noqa: E731 - fp16/bf16 files load as fp32
    unet = _build(UNet2DConditionModel, cfg["unet"], as_f32(unet_t))
    vae = _build(AutoencoderKL, cfg["vae"], as_f32(vae_t))
    text = _build_text(CLIPTextModel, cfg["text_encoder"], text_t)
    text_2 = _build_text(CLIPTextModelWithProjection, cfg["text_encoder_2"], text_2_t)
    tokenizer, tokenizer_2 = load_tokenizer(str(tokenizer_dir)), load_tokenizer_2(str(tokenizer_dir))
    for name, c in (("text_encoder", cfg["text_encoder"]), ("text_encoder_2", cfg["text_encoder_2"])):
        if len(tokenizer) != c["vocab_size"]:
            raise HostError(f"The checkpoint's {name} has {c['vocab_size']} tokens, the CLIP tokenizer "
                            f"{len(tokenizer)}")
    return SDXL(unet, vae, text, tokenizer, path, cfg, text_encoder_2=text_2, tokenizer_2=tokenizer_2)
