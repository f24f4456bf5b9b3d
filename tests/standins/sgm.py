"""A tiny SDXL-shaped model that really computes, as A1111 1.10.1 and Forge 2 hold it (for the lent denoiser on SDXL).

Real widths where our code reads them: the token states 2048 wide (CLIP ViT-L's 768 and OpenCLIP ViT-bigG's 1280
side by side), bigG's pooled vector 1280, the UNet's ``vector``/``y`` 2816 = pooled + six sinusoidal size embeddings
of 256 (original height and width, crop top and left, target height and width: sgm's
``ConcatTimestepEmbedderND``); the rest in miniature (:mod:`.ldm`'s UNet with sgm's ``label_emb``).

* A1111: an sgm ``DiffusionEngine`` as ``sd_models_xl.extend_sdxl`` leaves it: ``is_sdxl``, ``conditioner`` (its
  ``embedders`` A1111's hijacked encoders, each with ``tokenize_line``) as ``cond_stage_model``,
  ``get_learned_conditioning(batch)`` -> ``{crossattn, vector}`` (the batch's ``width``/``height``, default 1024; an
  empty negative prompt's text zeroed; the crop corner from ``opts.sdxl_crop_top``/``_left``; CLIP skip from
  ``opts``), ``apply_model(x, t, cond)`` with that dict, ``encode_first_stage`` that *samples* and scales (sgm's
  ``AutoencoderKLInferenceWrapper``), ``first_stage_model.encoder``/``quant_conv``, ``scale_factor`` 0.13025,
  ``alphas_cumprod``, ``cond_stage_model_empty_prompt`` (the empty prompt's ``crossattn``).
* Forge: ``StableDiffusionXL``: ``is_sdxl``, ``text_processing_engine_l``/``_g`` (``set_clip_skip`` sets both), the
  same ``get_learned_conditioning`` under ``torch.inference_mode``, ``forge_objects`` whose KModel's diffusion model
  takes the vector as ``y``; its VAE's ``encode`` applies ``quant_conv`` as diffusers' AutoencoderKL does.
"""

from __future__ import annotations

import math
import sys
import types

import torch
from torch import nn

from . import ldm

CTX, POOLED, SIZE = 2048, 1280, 256
ADM = POOLED + 6 * SIZE  # 2816
SCALE = 0.13025


def sinusoid(value: float, dim: int = SIZE) -> torch.Tensor:
    """sgm's ``timestep_embedding`` of one number: ``(1, dim)`` (cos, then sin)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    angles = float(value) * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class TextEncoders(nn.Module):
    """Both encoders in one: words -> ids (:class:`.ldm.TextEncoder`'s chunks) -> ``(states (n, 77k, 2048), pooled
    (n, 1280))``; CLIP skip picks the last layer or the one before."""

    def __init__(self):
        super().__init__()
        self.words = ldm.TextEncoder()
        self.embed = nn.Embedding(1000, 16)
        self.layers = nn.ModuleList([nn.Linear(16, 16), nn.Linear(16, 16)])
        self.to_states, self.to_pooled = nn.Linear(16, CTX), nn.Linear(16, POOLED)
        nn.init.normal_(self.to_states.weight, std=0.3)  # keys as distinct as the 8-wide SD1.5 stand-in's

    def tokenize_line(self, text):
        return self.words.tokenize_line(text)

    def encode(self, texts, clip_skip):
        states, pooled = [], []
        for text in texts:
            chunks = [torch.tensor(c.tokens) for c in self.tokenize_line(text)[0]]
            h = [self.embed(torch.cat(chunks) % 1000)]
            for layer in self.layers:
                h.append(torch.tanh(layer(h[-1])))
            states.append(self.to_states(h[-max(1, min(int(clip_skip), 2))]))
            pooled.append(self.to_pooled(h[-1][:77].mean(dim=0)))  # the first chunk's, as the WebUIs pool
        return torch.stack(states), torch.stack(pooled)


def conditioning(text: TextEncoders, batch, crop: tuple[int, int], clip_skip: int) -> dict:
    """``get_learned_conditioning(batch)`` of both WebUIs on SDXL."""
    width = getattr(batch, "width", None) or 1024
    height = getattr(batch, "height", None) or 1024
    states, pooled = text.encode(list(batch), clip_skip)
    if getattr(batch, "is_negative_prompt", False) and all(x == "" for x in batch):
        states, pooled = torch.zeros_like(states), torch.zeros_like(pooled)
    sizes = torch.cat([sinusoid(v) for v in (height, width, crop[0], crop[1], height, width)], dim=1)
    return {"crossattn": states, "vector": torch.cat([pooled, sizes.repeat(len(batch), 1)], dim=1)}


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Conv2d(3, 2 * ldm.LAT, 8, stride=8)
        self.quant_conv = nn.Conv2d(2 * ldm.LAT, 2 * ldm.LAT, 1)
        self.decoder = nn.ConvTranspose2d(ldm.LAT, 3, 8, stride=8)

    def mean(self, x):
        """The posterior's mean (unscaled): the oracle of ``encode``."""
        return self.quant_conv(self.encoder(x)).chunk(2, dim=1)[0]


class PartsXL(nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.unet, self.vae, self.text = ldm.UNet(CTX, ADM).eval(), VAE().eval(), TextEncoders().eval()


def checkpoint_info():
    return types.SimpleNamespace(filename="sdxl.safetensors", title="sdxl.safetensors [4567cdef]",
                                 name_for_extra="sdxl", model_name="sdxl")


def _crop(opts) -> tuple[int, int]:
    data = getattr(opts, "data", {})
    return int(data.get("sdxl_crop_top", 0)), int(data.get("sdxl_crop_left", 0))


class DiffusionEngine(ldm.LatentDiffusion):
    """A1111's ``shared.sd_model`` on SDXL: ldm's surface as ``extend_sdxl`` leaves it, with sgm's conditioner."""

    is_sdxl, is_sd2, is_sdxl_inpaint = True, False, False
    scale_factor = SCALE

    def __init__(self, parts, opts):
        super().__init__(parts, opts)
        embedder = types.SimpleNamespace(tokenize_line=parts.text.tokenize_line)
        self.conditioner = types.SimpleNamespace(embedders=[embedder, embedder])  # no tokenize_line of its own
        self.cond_stage_model = self.conditioner
        self.sd_checkpoint_info = checkpoint_info()
        self.sd_model_hash = "4567cdef"
        self.cond_stage_model_empty_prompt = self.cond_stage_model_empty_prompt["crossattn"]  # get_empty_cond

    def get_learned_conditioning(self, batch):
        return conditioning(self.text, batch, _crop(self.opts), self.opts.data.get("CLIP_stop_at_last_layers", 1))

    def encode_first_stage(self, x):
        """sgm's: a sample of the posterior, times the scale factor (A1111's ``get_first_stage_encoding`` on SDXL
        passes it through)."""
        return ldm.Posterior(self.first_stage_model.quant_conv(self.first_stage_model.encoder(x))).sample() * SCALE

    def apply_model(self, x, t, cond):
        return self.model.diffusion_model(x, t, context=cond["crossattn"], y=cond["vector"])

    def posterior_mean(self, x):
        return self.first_stage_model.mean(x) * SCALE


class ForgeVAE(ldm.ForgeVAEModel):
    scaling_factor = SCALE

    def encode(self, x, regulation=None):
        posterior = ldm.Posterior(self.vae.quant_conv(self.vae.encoder(x)))
        return regulation(posterior) if regulation is not None else posterior.sample()


class ForgeXLEngine(ldm.ForgeEngine):
    """Forge's ``StableDiffusionXL`` engine."""

    is_sd1, is_sdxl = False, True

    def __init__(self, parts):
        super().__init__(parts)
        self.forge_objects.vae.first_stage_model = ForgeVAE(parts.vae)
        del self.text_processing_engine
        self.text_processing_engine_l = types.SimpleNamespace(tokenize_line=parts.text.tokenize_line, clip_skip=1)
        self.text_processing_engine_g = types.SimpleNamespace(tokenize_line=parts.text.tokenize_line, clip_skip=1)
        self.sd_checkpoint_info = checkpoint_info()
        self.sd_model_hash = "4567cdef"

    def set_clip_skip(self, clip_skip):
        self.text_processing_engine_l.clip_skip = clip_skip
        self.text_processing_engine_g.clip_skip = clip_skip

    @torch.inference_mode()
    def get_learned_conditioning(self, batch):
        ldm.memory().load_model_gpu(self.forge_objects.clip.patcher)
        opts = sys.modules["modules.shared"].opts
        return conditioning(self.text, batch, _crop(opts), self.text_processing_engine_l.clip_skip)

    def posterior_mean(self, x):
        return self.forge_objects.vae.first_stage_model.vae.mean(x) * SCALE
