"""A1111 1.10.1's loaded model (``shared.sd_model``: an ldm ``LatentDiffusion`` on SD1.5, an sgm ``DiffusionEngine``
extended by ``sd_models_xl.py`` on SDXL) as a Denoiser.

Read from kklouzal/stable-diffusion-webui 82a973c0: the VAE through ``encode_first_stage`` (an ldm
``DiagonalGaussianDistribution``: its mode, times ``scale_factor``; A1111's own ``get_first_stage_encoding`` would
sample) and ``decode_first_stage`` in ``devices.dtype_vae``; the prompt through ``get_learned_conditioning`` (the
hijacked ``FrozenCLIPEmbedderWithCustomWords``: emphasis, 75-token chunks broken at commas, CLIP skip from
``opts.CLIP_stop_at_last_layers``), padded with ``cond_stage_model_empty_prompt`` as ``pad_cond`` pads; the noise
through ``apply_model(x, t, cond)`` (eps parameterisation, integer ``t``) under ``devices.autocast``; attention
control by per-instance forwards on the UNet's CrossAttention modules (:func:`.attention.patched_modules`).

On SDXL: ``get_learned_conditioning`` gives ``{crossattn, vector}`` and ``apply_model(x, t, cond)`` takes that dict
(``self.model`` is sgm's ``OpenAIWrapper``: ``y = vector``); ``extend_sdxl`` sets ``alphas_cumprod``,
``parameterization`` and ``conditioning_key`` as on SD1.5. sgm's ``encode_first_stage`` samples the posterior
(``AutoencoderKLInferenceWrapper.encode``) and scales it, so the mean is taken from the VAE's own ``encoder`` and
``quant_conv`` (the Gaussian's moments, as in sgm's ``AutoencoderKL.encode``), times ``scale_factor`` (0.13025).
The prompt's chunks are its first embedder's (CLIP ViT-L; sgm's ``GeneralConditioner`` has no ``tokenize_line``).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from lib_profile.families import SD15, SDXL
from lib_profile.hosts.base import HostError
from lib_profile.hosts.webui.attention import patched_modules
from lib_profile.hosts.webui.denoiser import LoopState, WebUIDenoiser, networks_applied
from lib_profile.hosts.webui.model_family import model_family


def refusal(sd_model) -> str:
    """Why ``sd_model`` cannot be lent ("" when it can): not an eps-parameterised, text-only SD1.x or SDXL model (the
    family itself is checked before, by the host)."""
    if sd_model is None or not hasattr(sd_model, "apply_model") or not hasattr(sd_model, "model"):
        return "A1111 has no model loaded; pick an SD1.5 or SDXL checkpoint at the top of the page and try again"
    if getattr(sd_model, "parameterization", "eps") != "eps":
        return (f"the loaded checkpoint predicts {sd_model.parameterization!r}, not the noise (eps) as SD1.5 and "
                "SDXL do; pick an SD1.5 or SDXL checkpoint")
    if getattr(sd_model.model, "conditioning_key", "crossattn") not in ("crossattn", None) \
            or getattr(sd_model, "is_sdxl_inpaint", False) is True:
        return ("the loaded checkpoint is an inpainting model; pick a plain SD1.5 or SDXL checkpoint for photo "
                "inversion")
    return ""


class A1111Denoiser(WebUIDenoiser):
    def __init__(self, sd_model):
        from modules import devices

        why = refusal(sd_model)
        if why:
            raise HostError(why)
        family = SDXL if model_family(sd_model) == SDXL.name else SD15
        super().__init__(sd_model, sd_model.model.diffusion_model, sd_model.alphas_cumprod, devices.device,
                         devices.dtype_unet, family)
        self.vae_dtype = devices.dtype_vae

    def _autocast(self):
        from modules import devices

        return devices.autocast()

    def _encode(self, pixels):
        pixels = pixels.to(self.device, self.vae_dtype)
        with self._autocast():
            if self.pooled:  # sgm: encode_first_stage would sample and scale
                vae = self.sd_model.first_stage_model
                mean = vae.quant_conv(vae.encoder(pixels)).chunk(2, dim=1)[0]
            else:
                posterior = self.sd_model.encode_first_stage(pixels)
                mean = posterior.mode() if hasattr(posterior, "mode") else posterior
        return mean * self.sd_model.scale_factor

    def _decode(self, latents):
        with self._autocast():
            return self.sd_model.decode_first_stage(latents.to(self.device, self.vae_dtype))

    def _learned(self, batch):
        with self._autocast():
            return self.sd_model.get_learned_conditioning(batch)

    def _empty_chunk(self):
        empty = getattr(self.sd_model, "cond_stage_model_empty_prompt", None)
        return empty if empty is not None else super()._empty_chunk()

    def _tokenize(self, text: str) -> list:
        encoder = self.sd_model.cond_stage_model
        return (encoder.embedders[0] if self.pooled else encoder).tokenize_line(text)[0]

    def _unet(self, latents, t: int, context, vector=None):
        import torch

        steps = torch.full((latents.shape[0],), int(t), dtype=torch.long, device=latents.device)
        cond = context if vector is None else {"crossattn": context, "vector": vector}
        with self._autocast():
            out = self.sd_model.apply_model(latents, steps, cond)
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
