"""A1111 1.10.1's loaded model (``shared.sd_model``, an ldm ``LatentDiffusion``) as a Denoiser.

Read from kklouzal/stable-diffusion-webui 82a973c0: the VAE through ``encode_first_stage`` (an ldm
``DiagonalGaussianDistribution``: its mode, times ``scale_factor``; A1111's own ``get_first_stage_encoding`` would
sample) and ``decode_first_stage`` in ``devices.dtype_vae``; the prompt through ``get_learned_conditioning`` (the
hijacked ``FrozenCLIPEmbedderWithCustomWords``: emphasis, 75-token chunks broken at commas, CLIP skip from
``opts.CLIP_stop_at_last_layers``), padded with ``cond_stage_model_empty_prompt`` as ``pad_cond`` pads; the noise
through ``apply_model(x, t, cond)`` (eps parameterisation, integer ``t``) under ``devices.autocast``; attention
control by per-instance forwards on the UNet's CrossAttention modules (:func:`.attention.patched_modules`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from lib_profile.hosts.base import HostError
from lib_profile.hosts.webui.attention import patched_modules
from lib_profile.hosts.webui.denoiser import LoopState, WebUIDenoiser, networks_applied


def refusal(sd_model) -> str:
    """Why ``sd_model`` cannot be lent ("" when it can): not an eps-parameterised, text-only SD1.x model."""
    if sd_model is None or not hasattr(sd_model, "apply_model") or not hasattr(sd_model, "model"):
        return "A1111 has no model loaded; pick an SD1.5 checkpoint at the top of the page and try again"
    if getattr(sd_model, "parameterization", "eps") != "eps":
        return (f"the loaded checkpoint predicts {sd_model.parameterization!r}, not the noise (eps) as SD1.5 does; "
                "pick an SD1.5 checkpoint")
    if getattr(sd_model.model, "conditioning_key", "crossattn") not in ("crossattn", None):
        return "the loaded checkpoint is an inpainting model; pick a plain SD1.5 checkpoint for photo inversion"
    return ""


class A1111Denoiser(WebUIDenoiser):
    def __init__(self, sd_model):
        from modules import devices

        why = refusal(sd_model)
        if why:
            raise HostError(why)
        super().__init__(sd_model, sd_model.model.diffusion_model, sd_model.alphas_cumprod, devices.device,
                         devices.dtype_unet)
        self.vae_dtype = devices.dtype_vae

    def _autocast(self):
        from modules import devices

        return devices.autocast()

    def _encode(self, pixels):
        with self._autocast():
            posterior = self.sd_model.encode_first_stage(pixels.to(self.device, self.vae_dtype))
        mean = posterior.mode() if hasattr(posterior, "mode") else posterior
        return mean * self.sd_model.scale_factor

    def _decode(self, latents):
        with self._autocast():
            return self.sd_model.decode_first_stage(latents.to(self.device, self.vae_dtype))

    def _text(self, text: str):
        with self._autocast():
            cond = self.sd_model.get_learned_conditioning([text])
        return cond["crossattn"] if isinstance(cond, dict) else cond

    def _empty_chunk(self):
        empty = getattr(self.sd_model, "cond_stage_model_empty_prompt", None)
        return empty if empty is not None else self._text("")

    def _tokenize(self, text: str) -> list:
        return self.sd_model.cond_stage_model.tokenize_line(text)[0]

    def _unet(self, latents, t: int, context):
        import torch

        steps = torch.full((latents.shape[0],), int(t), dtype=torch.long, device=latents.device)
        with self._autocast():
            out = self.sd_model.apply_model(latents, steps, context)
        return out.to(self.dtype)

    def _attention(self, loop: LoopState):
        return patched_modules(self.diffusion_model, loop)


@contextlib.contextmanager
def lend_model(sd_model, prompts: list[str], clip_skip: int) -> Iterator[A1111Denoiser]:
    """The denoiser with the prompts' LoRAs active (CLIP skip is read from ``opts``, set by the caller). A1111 applies
    a LoRA's weights lazily at the next forward and restores them from its backup once ``loaded_networks`` is
    empty again. The UNet's weights are kept out of autograd meanwhile (``requires_grad`` off, put back on exit):
    null-text inversion differentiates with respect to the context only, and must leave no ``.grad`` on them."""
    denoiser = A1111Denoiser(sd_model)
    frozen = [p for p in denoiser.diffusion_model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with networks_applied(prompts):
            yield denoiser
    finally:
        for p in frozen:
            p.requires_grad_(True)
