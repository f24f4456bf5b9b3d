"""The diffusers host's model lent as a ``hosts.denoiser.Denoiser`` (photo inversion and editing)."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import numpy as np
from PIL import Image

from lib_profile.hosts.denoiser import Denoiser
from lib_profile.prompts import parse as prompts
from lib_profile.prompts.schedule import refuse_composable


class DiffusersDenoiser(Denoiser):
    def __init__(self, model, device, dtype, clip_skip: int = 1, info: Optional[dict] = None):
        from diffusers import DDIMScheduler

        self.model, self.device, self.dtype, self.clip_skip = model, device, dtype, clip_skip
        self.alphas_cumprod = DDIMScheduler.from_config(model.scheduler_config).alphas_cumprod.double()
        self.info = dict(info or {})

    def encode(self, image: Image.Image):
        import torch

        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0)
        pixels = pixels.permute(2, 0, 1)[None].to(self.device, self.dtype)
        with torch.no_grad():
            posterior = self.model.vae.encode(pixels).latent_dist
        return posterior.mean * self.model.vae.config.scaling_factor

    def decode(self, latents) -> list[Image.Image]:
        import torch

        with torch.no_grad():
            pixels = self.model.vae.decode(latents.to(self.dtype) / self.model.vae.config.scaling_factor).sample
        arrays = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(a, "RGB") for a in arrays]

    def _text(self, prompt: str) -> str:
        text = prompts.extract_networks(prompt)[0]  # the tags were applied when the denoiser was opened
        refuse_composable(text, "Photo inversion")
        return text

    def chunks(self, prompt: str) -> int:
        return prompts.chunk_count(self.model.tokenizer, self._text(prompt))

    def conditioning(self, prompt: str, chunks: int = 1):
        import torch

        with torch.no_grad():
            return prompts.encode(self.model.text_encoder, self.model.tokenizer, self._text(prompt), self.clip_skip,
                                  min_chunks=chunks)[0].to(self.dtype)

    def eps(self, latents, t: int, context):
        if context.shape[0] != latents.shape[0]:
            context = context.expand(latents.shape[0], -1, -1)
        return self.model.unet(latents.to(self.dtype), t, encoder_hidden_states=context.to(self.dtype)).sample

    @contextlib.contextmanager
    def controlled(self, controller, steps: int, images: int, features=None) -> Iterator[None]:
        """Our attention processors (``diffusers/attention.py``; the UNet's batch ``[negative, prompt]`` is theirs
        too) and a forward hook on ``up_blocks.1.resnets.1`` (LDM ``output_blocks.4.0``); removed on exit."""
        from lib_profile.hosts.diffusers.attention import controlled

        calls = [0]
        unet = self.model.unet
        counter = unet.register_forward_pre_hook(lambda *_a: calls.__setitem__(0, calls[0] + 1))
        hook = None
        if features is not None:
            hook = unet.up_blocks[1].resnets[1].register_forward_hook(
                lambda _m, _i, output: features(calls[0] - 1, output))
        try:
            with controlled(unet, controller, steps, images) if controller is not None else contextlib.nullcontext():
                yield
        finally:
            counter.remove()
            if hook is not None:
                hook.remove()
