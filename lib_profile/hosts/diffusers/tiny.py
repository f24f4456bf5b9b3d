"""A tiny random SD1.5-shaped model and ControlNet, built offline in about a second.

The same architecture as SD1.5 (3 cross-attention levels + 1 plain, 2 resnets per level, a VAE that
downsamples 8x, a 77-token CLIP text encoder with the real vocabulary), only narrow. Its images are
noise: it exists so that every code path (single-file loading, samplers, ControlNet, LoRA,
attention hooks) runs in seconds without weights. Saved both as a single-file checkpoint in the
original layout (what WebUI users have) and as a diffusers folder (for side-by-side references).
``full_size_configs()`` gives real SD1.5 shapes for the few slow tests and GPU benchmarks.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from lib_profile.hosts.diffusers.checkpoint import SCHEDULER_CONFIG, save_sd15
from lib_profile.hosts.diffusers.controlnet_file import save_controlnet
from lib_profile.prompts.tokenizer import write_tokenizer_files
from lib_profile.store.files import move_folder_into_place

VERSION = "tiny-v1"
CHECKPOINT = "tiny-sd15.safetensors"
CONTROLNET = "tiny-controlnet.safetensors"
DIFFUSERS = "diffusers"
SEED = 1234


def tiny_configs() -> dict[str, dict[str, Any]]:
    unet = {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [32, 64, 64],
        "layers_per_block": 2,
        "cross_attention_dim": 32,
        "attention_head_dim": 8,
        "norm_num_groups": 32,
    }
    vae = {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [32, 32, 32, 32],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": 64,
        "scaling_factor": 0.18215,
    }
    text = {
        "vocab_size": 49408,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 5,
        "num_attention_heads": 1,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": 32,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    }
    control = {k: unet[k] for k in ("in_channels", "down_block_types", "block_out_channels", "layers_per_block",
                                    "cross_attention_dim", "attention_head_dim", "norm_num_groups")}
    control["conditioning_embedding_out_channels"] = [16, 32, 32, 32]
    return {"unet": unet, "vae": vae, "text_encoder": text, "controlnet": control}


def full_size_configs() -> dict[str, dict[str, Any]]:
    """SD1.5's real shapes (860M UNet, 84M VAE, 123M CLIP-L text encoder)."""
    cfg = tiny_configs()
    cfg["unet"].update(sample_size=64, block_out_channels=[320, 640, 1280, 1280],
                       down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                       up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, cross_attention_dim=768)
    cfg["vae"].update(block_out_channels=[128, 256, 512, 512], layers_per_block=2, sample_size=512)
    cfg["text_encoder"].update(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                               num_attention_heads=12, projection_dim=768)
    cfg["controlnet"].update(block_out_channels=[320, 640, 1280, 1280], cross_attention_dim=768,
                             down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                             conditioning_embedding_out_channels=[16, 32, 96, 256])
    return cfg


def build_modules(configs: dict[str, dict[str, Any]] | None = None, seed: int = SEED):
    """Random-weight (unet, vae, text_encoder, controlnet) for the given configs, deterministic per seed."""
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = configs or tiny_configs()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**cfg["unet"])
    vae = AutoencoderKL(**cfg["vae"])
    text = CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"]))
    controlnet = ControlNetModel(**cfg["controlnet"])
    with torch.no_grad():
        # a fresh ControlNet's zero convolutions make it a no-op; give them weights so it steers
        zero_convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                      controlnet.controlnet_cond_embedding.conv_out]
        for conv in zero_convs:
            conv.weight.normal_(0.0, 0.05)
            conv.bias.normal_(0.0, 0.05)
    return [m.eval() for m in (unet, vae, text, controlnet)]


def ensure_tiny(cache: Path) -> Path:
    """Build (once) and return the folder holding the tiny checkpoint, ControlNet and diffusers copy."""
    target = Path(cache) / VERSION
    if (target / CHECKPOINT).is_file() and (target / CONTROLNET).is_file() and (target / DIFFUSERS).is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        build_into(work)
        move_folder_into_place(work, target)  # another process may win the race: theirs is as good as ours
    finally:
        if work.exists() and work != target:
            shutil.rmtree(work, ignore_errors=True)
    return target


def build_into(folder: Path, configs: dict[str, dict[str, Any]] | None = None, diffusers_copy: bool = True,
               half: bool = False) -> None:
    unet, vae, text, controlnet = build_modules(configs)
    if half:
        unet, vae, text, controlnet = (m.half() for m in (unet, vae, text, controlnet))
    meta = {"profile_studio": "random weights for tests; draws noise"}
    save_sd15(folder / CHECKPOINT, unet, vae, text, metadata=meta)
    save_controlnet(folder / CONTROLNET, controlnet, metadata=meta)
    tok_dir = write_tokenizer_files(folder / "tokenizer")
    if diffusers_copy:
        from diffusers import PNDMScheduler, StableDiffusionPipeline
        from transformers import CLIPTokenizer

        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=text, tokenizer=CLIPTokenizer.from_pretrained(str(tok_dir)), unet=unet,
            scheduler=PNDMScheduler.from_config({**SCHEDULER_CONFIG, "skip_prk_steps": True}),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.save_pretrained(str(folder / DIFFUSERS), safe_serialization=True)
        controlnet.save_pretrained(str(folder / DIFFUSERS / "controlnet"), safe_serialization=True)
