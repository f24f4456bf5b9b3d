"""The diffusers host's model lent as a ``hosts.denoiser.Denoiser`` (photo inversion and editing): SD1.5's
(:class:`DiffusersDenoiser`) and SDXL's (:class:`SdxlDenoiser`)."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import numpy as np
from PIL import Image

from lib_profile.families import SD15, SDXL, ModelFamily
from lib_profile.hosts.denoiser import Denoiser
from lib_profile.prompts import parse as prompts
from lib_profile.prompts.schedule import refuse_composable


class DiffusersDenoiser(Denoiser):
    family: ModelFamily = SD15

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
        too) and a forward hook on the family's Plug-and-Play feature block (:func:`feature_block`); removed on
        exit."""
        from lib_profile.hosts.diffusers.attention import controlled

        calls = [0]
        unet = self.model.unet
        counter = unet.register_forward_pre_hook(lambda *_a: calls.__setitem__(0, calls[0] + 1))
        hook = None
        if features is not None:
            hook = feature_block(unet, self.family.pnp_feature_block).register_forward_hook(
                lambda _m, _i, output: features(calls[0] - 1, output))
        try:
            with controlled(unet, controller, steps, images) if controller is not None else contextlib.nullcontext():
                yield
        finally:
            counter.remove()
            if hook is not None:
                hook.remove()


def feature_block(unet, sgm_name: str):
    """The diffusers module of an SGM/LDM decoder residual block ``output_blocks.{i}.0``: ``up_blocks[i // n]
    .resnets[i % n]`` with ``n`` = the UNet's ``layers_per_block`` + 1 (SD1.5's ``output_blocks.4.0`` is
    ``up_blocks.1.resnets.1``, SDXL's ``output_blocks.1.0`` is ``up_blocks.0.resnets.1``)."""
    index = int(sgm_name.split(".")[1])
    per_level = int(unet.config.layers_per_block) + 1
    return unet.up_blocks[index // per_level].resnets[index % per_level]


class SdxlDenoiser(DiffusersDenoiser):
    """SDXL's model as a Denoiser. SDXL's UNet reads, beside the prompt's token states (``(1, 77 * chunks, 2048)``,
    the two encoders' concatenated: :mod:`.sdxl_prompts`), the second encoder's pooled vector and the size numbers
    through its added embedding. So that inversion handles one tensor per prompt, as on SD1.5, a conditioning here
    is ``(1, 77 * chunks + 1, 2048)``: its last row the pooled vector (1280, zero-padded to the width), split off
    again by :meth:`eps`; the size numbers come from the latent (original = target = the photo's size, no crop, as
    the host's SDXL passes are conditioned). Null-text inversion optimises the negative prompt's pooled vector with
    its states: an empty negative prompt is all zeros in both (A1111's rule, as the host generates)."""

    family = SDXL

    def _encoder(self):
        from lib_profile.hosts.diffusers.sdxl_prompts import SdxlPromptEncoder

        return SdxlPromptEncoder(self.model, self.clip_skip)

    def chunks(self, prompt: str) -> int:
        return self._encoder().chunks(self._text(prompt))

    def conditioning(self, prompt: str, chunks: int = 1):
        import torch

        text = self._text(prompt)
        with torch.no_grad():
            context, pooled = self._encoder().encode(text, chunks, zero=not text.strip())  # padded to >= chunks
        if pooled.shape[-1] > context.shape[-1]:
            raise ValueError(f"a pooled vector of {pooled.shape[-1]} does not fit a {context.shape[-1]}-wide row")
        row = torch.nn.functional.pad(pooled, (0, context.shape[-1] - pooled.shape[-1]))[:, None]
        return torch.cat([context, row.to(context)], dim=1).to(self.dtype)

    def eps(self, latents, t: int, context):
        import torch

        if context.shape[0] != latents.shape[0]:
            context = context.expand(latents.shape[0], -1, -1)
        pooled = context[:, -1, :self.model.text_encoder_2.config.projection_dim]
        scale = 2 ** (len(self.model.vae.config.block_out_channels) - 1)  # pixels per latent (8)
        h, w = (int(s) * scale for s in latents.shape[-2:])
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=self.dtype, device=latents.device).expand(
            latents.shape[0], -1)
        return self.model.unet(latents.to(self.dtype), t, encoder_hidden_states=context[:, :-1].to(self.dtype),
                               added_cond_kwargs={"text_embeds": pooled.to(self.dtype), "time_ids": time_ids}).sample


#: the Denoiser of each family's model
DENOISERS = {SD15.name: DiffusersDenoiser, SDXL.name: SdxlDenoiser}
