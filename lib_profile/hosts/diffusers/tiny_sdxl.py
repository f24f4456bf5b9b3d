"""A tiny random SDXL-shaped model, built offline in about a second, saved as one SGM-layout checkpoint.

The same architecture as SDXL base 1.0 (diffusers ``stabilityai/stable-diffusion-xl-base-1.0`` configs): a UNet
whose first level has no attention and whose deeper levels stack several transformer blocks per attention, linear
``proj_in``/``proj_out``, the ``text_time`` added embedding (pooled text + 6 size/crop numbers); two text encoders,
CLIP ViT-L-shaped (``CLIPTextModel``) and OpenCLIP bigG-shaped (``CLIPTextModelWithProjection``, 10 layers so that
diffusers' single-file detector names it ``xl_base``), concatenated to the cross-attention width; the SD VAE with
SDXL's scaling factor. Only narrow: its images are noise. It exists so that family detection, conversion and
(later) SDXL paths run in seconds without weights. ``--checkpoint tiny-sdxl`` builds it; the diffusers host generates,
explains and edits with it (:mod:`.sdxl_checkpoint`), and the face trainer trains on it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from lib_profile.hosts.diffusers.controlnet_file import save_controlnet
from lib_profile.store.files import move_folder_into_place

VERSION = "tiny-sdxl-v2"  # v2: with its ControlNet
CHECKPOINT = "tiny-sdxl.safetensors"
CONTROLNET = "tiny-sdxl-controlnet.safetensors"  # diffusers layout, as SDXL ControlNets ship
NAME = "tiny-sdxl"
SEED = 1234


def tiny_sdxl_configs() -> dict[str, dict[str, Any]]:
    """Configs of the four parts (``unet``, ``vae``, ``text_encoder``, ``text_encoder_2``): widths 32 (CLIP-L part)
    + 48 (bigG part) = 80-wide context, pooled 48, transformer depths [1, 2, 3] (SDXL: [1, 2, 10], level 0 plain).
    Attention heads follow SDXL's rule (64 features a head, at least one: ``sdxl_checkpoint`` reads them so), so the
    model loaded from the file computes what these modules compute."""
    text, text_2, time_dim = 32, 48, 8
    unet = {
        "sample_size": 8, "in_channels": 4, "out_channels": 4,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": [32, 64, 64], "layers_per_block": 2, "transformer_layers_per_block": [1, 2, 3],
        "cross_attention_dim": text + text_2, "attention_head_dim": [1, 1, 1], "norm_num_groups": 32,
        "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": time_dim,
        "addition_embed_type_num_heads": 64, "projection_class_embeddings_input_dim": text_2 + 6 * time_dim,
    }
    vae = {
        "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [32, 32, 32, 32], "layers_per_block": 1,
        "latent_channels": 4, "norm_num_groups": 32, "sample_size": 64, "scaling_factor": 0.13025,
    }
    clip = {"vocab_size": 49408, "max_position_embeddings": 77, "layer_norm_eps": 1e-5, "bos_token_id": 49406,
            "eos_token_id": 49407, "pad_token_id": 1}
    text_encoder = {**clip, "hidden_size": text, "intermediate_size": 64, "num_hidden_layers": 3,
                    "num_attention_heads": 1, "projection_dim": text, "hidden_act": "quick_gelu"}
    # open_clip fuses q/k/v; diffusers splits them by the projection width, which is bigG's width (1280)
    text_encoder_2 = {**clip, "hidden_size": text_2, "intermediate_size": 96, "num_hidden_layers": 10,
                      "num_attention_heads": 1, "projection_dim": text_2, "hidden_act": "gelu", "pad_token_id": 0}
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2}


def build_modules(configs: dict[str, dict[str, Any]] | None = None, seed: int = SEED):
    """Random-weight ``(unet, vae, text_encoder, text_encoder_2)``, deterministic per ``seed``."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = configs or tiny_sdxl_configs()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**cfg["unet"])
    vae = AutoencoderKL(**cfg["vae"])
    text = CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"]))
    text_2 = CLIPTextModelWithProjection(CLIPTextConfig(**cfg["text_encoder_2"]))
    return [m.eval() for m in (unet, vae, text, text_2)]


def build_controlnet(unet, seed: int = SEED):
    """A random-weight SDXL ControlNet shaped after ``unet`` (diffusers ``ControlNetModel.from_unet``: its encoder
    half, the size embedding, a conditioning-image encoder), its zero convolutions made non-zero so that it
    changes the picture (a trained ControlNet's do)."""
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(seed + 1)
    controlnet = ControlNetModel.from_unet(unet)
    with torch.no_grad():
        for name, p in controlnet.named_parameters():
            if name.startswith(("controlnet_down_blocks.", "controlnet_mid_block.", "controlnet_cond_embedding.conv_out")):
                p.normal_(0, 0.05)
    return controlnet.eval()


def save_sdxl(path: str | Path, unet, vae, text_encoder, text_encoder_2,
              metadata: dict[str, str] | None = None) -> Path:
    """Write the four parts as one SGM-layout ``.safetensors`` (:func:`sgm_layout.to_sgm`), atomically."""
    from safetensors.torch import save_file

    from lib_profile.hosts.diffusers.checkpoint import _atomic_save
    from lib_profile.hosts.diffusers.sgm_layout import to_sgm

    path = Path(path)
    _atomic_save(save_file, to_sgm(unet, vae, text_encoder, text_encoder_2), path, metadata)
    return path


def ensure_tiny_sdxl(cache: Path) -> Path:
    """Build (once) and return the path of the tiny SDXL checkpoint under ``cache``."""
    target = Path(cache) / VERSION
    if (target / CHECKPOINT).is_file() and (target / CONTROLNET).is_file():
        return target / CHECKPOINT
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tiny-sdxl-", dir=target.parent))
    try:
        modules = build_modules()
        save_sdxl(work / CHECKPOINT, *modules,
                  metadata={"profile_studio": "random weights for tests; draws noise",
                            "modelspec.architecture": "stable-diffusion-xl-v1-base"})
        save_controlnet(work / CONTROLNET, build_controlnet(modules[0]), layout="diffusers",
                        metadata={"profile_studio": "random weights for tests"})
        move_folder_into_place(work, target)  # another process may win the race: theirs is as good as ours
    finally:
        if work.exists() and work != target:
            shutil.rmtree(work, ignore_errors=True)
    return target / CHECKPOINT


def sdxl_base_configs() -> dict[str, dict[str, Any]]:
    """SDXL base 1.0's configs in :func:`tiny_sdxl_configs`' form (diffusers
    ``stabilityai/stable-diffusion-xl-base-1.0``: block widths [320, 640, 1280], transformer depths [1, 2, 10],
    2048-wide context, CLIP ViT-L 12 x 768, OpenCLIP bigG 32 x 1280): for random-weight models at real shape (the
    benchmark) and for modules on the meta device (key tables)."""
    cfg = tiny_sdxl_configs()
    cfg["unet"].update({"sample_size": 128, "block_out_channels": [320, 640, 1280],
                        "transformer_layers_per_block": [1, 2, 10], "cross_attention_dim": 2048,
                        "attention_head_dim": [5, 10, 20], "addition_time_embed_dim": 256,
                        "projection_class_embeddings_input_dim": 2816})
    cfg["vae"].update({"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "sample_size": 1024})
    cfg["text_encoder"].update({"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                                "num_attention_heads": 12, "projection_dim": 768})
    cfg["text_encoder_2"].update({"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                                  "num_attention_heads": 20, "projection_dim": 1280})
    return cfg
