"""Forge 2's loaded model (``shared.sd_model``: ``backend.diffusion_engine.sd15.StableDiffusion``, or
``sdxl.StableDiffusionXL``) as a Denoiser.

Read from Forge dfdcbab6: the engine holds ``forge_objects`` (``unet``: a ``UnetPatcher`` whose ``model`` is a
``KModel``; ``clip``; ``vae``). Forge loads its weights under ``torch.inference_mode`` (``forge_loader``,
``forge_model_reload``), and such tensors cannot take part in autograd, nor can its blocks' in-place adds
(``x += n`` in ``BasicTransformerBlock``); so an ``eps`` under ``torch.enable_grad()`` (null-text inversion) runs the
UNet with plain copies of its weights (``torch.func.functional_call``; made once, dropped with the denoiser) under
``torch.func.functionalize`` (the in-place ops run out of place). What is called:

* VAE: ``memory_management.load_models_gpu([vae.patcher])``, ``vae.first_stage_model.encode(pixels, regulation)``
  with the posterior's mode as the regulation (Forge's ``encode_first_stage`` samples), then ``process_in``
  (the scaling factor); ``sd_model.decode_first_stage``.
* text: ``sd_model.set_clip_skip`` (put back on exit) and ``sd_model.get_learned_conditioning`` (Forge's
  ``ClassicTextProcessingEngine``, a port of A1111's), padded with the empty prompt's chunk (Forge has no
  ``cond_stage_model_empty_prompt``: ``get_learned_conditioning([""])``).
* UNet: ``memory_management.load_model_gpu(unet)`` as ``sampling_prepare`` loads it, then the diffusion model
  itself: ``KModel.apply_model`` takes sigma-scaled input and returns the denoised estimate; for an eps model it
  computes ``diffusion_model(x_t, t, context, transformer_options)`` in between (``calculate_input`` turns
  ``x / sqrt(sigma^2 + 1)`` into the DDPM ``x_t``, ``predictor.timestep(sigma)`` gives ``t``), which is what is
  called here, with the patcher's ``transformer_options`` (``cond_or_uncond`` for the batch's rows).
* attention control: a clone of the UNet patcher with attention-replace patches
  (:func:`.forge_attention.patched_clone`), used for the ``eps`` calls inside ``controlled`` only.

On SDXL ``get_learned_conditioning`` gives ``{crossattn, vector}`` (its text engines ``text_processing_engine_l``
and ``_g``, both given the CLIP skip), and the diffusion model takes the vector as ``y``, as ``KModel.apply_model``
passes it.

``sd_model.forge_objects`` is put back as it was on exit (Forge resets it before every batch anyway).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from lib_profile.families import SD15, SDXL
from lib_profile.hosts.base import HostError
from lib_profile.hosts.webui.denoiser import LoopState, WebUIDenoiser, networks_applied
from lib_profile.hosts.webui.forge_attention import patched_clone
from lib_profile.hosts.webui.model_family import model_family

#: the predictor's ``prediction_type`` of a noise-predicting model: ``"epsilon"`` from the checkpoint's diffusers
#: scheduler config (``k_prediction_from_diffusers_scheduler``), ``"eps"`` for ``Prediction``'s default
EPS = ("epsilon", "eps")
#: the engine's text processing engines (SD1.5: one; SDXL: CLIP ViT-L's and OpenCLIP ViT-bigG's)
TEXT_ENGINES = ("text_processing_engine", "text_processing_engine_l", "text_processing_engine_g")


def refusal(sd_model) -> str:
    """Why ``sd_model`` cannot be lent ("" when it can)."""
    objects = getattr(sd_model, "forge_objects", None)
    if objects is None or getattr(objects, "unet", None) is None:
        return ("Forge has not loaded the selected checkpoint yet (its model is a placeholder until the first "
                "generation); pick an SD1.5 or SDXL checkpoint at the top of the page, generate once, and try again")
    if not (getattr(sd_model, "is_sd1", False) or getattr(sd_model, "is_sdxl", False)):
        return "photo inversion needs an SD1.5 or SDXL checkpoint; pick one at the top of the page and try again"
    predictor = getattr(objects.unet.model, "predictor", None)
    if getattr(predictor, "prediction_type", "epsilon") not in EPS:
        return (f"the loaded checkpoint predicts {predictor.prediction_type!r}, not the noise (eps) as SD1.5 and "
                "SDXL do; pick an SD1.5 or SDXL checkpoint")
    if getattr(sd_model, "is_inpaint", False):
        return ("the loaded checkpoint is an inpainting model; pick a plain SD1.5 or SDXL checkpoint for photo "
                "inversion")
    return ""


class ForgeDenoiser(WebUIDenoiser):
    def __init__(self, sd_model):
        why = refusal(sd_model)
        if why:
            raise HostError(why)
        from backend import memory_management

        self.memory = memory_management
        self.unet = sd_model.forge_objects.unet
        self.memory.load_model_gpu(self.unet)
        kmodel = self.unet.model
        device = getattr(self.unet, "current_device", None) or self.unet.load_device
        super().__init__(sd_model, kmodel.diffusion_model, kmodel.predictor.alphas_cumprod, device,
                         kmodel.computation_dtype, SDXL if model_family(sd_model) == SDXL.name else SD15)
        self._patcher = self.unet  # the clone with attention patches while controlled
        self._plain = None  # name -> plain copy of each inference-mode weight, for eps under autograd

    def _encode(self, pixels):
        vae = self.sd_model.forge_objects.vae
        self.memory.load_models_gpu([vae.patcher])
        model = vae.first_stage_model
        latents = model.encode(pixels.to(vae.device, vae.vae_dtype), lambda posterior: posterior.mode())
        return model.process_in(latents.float())

    def _decode(self, latents):
        return self.sd_model.decode_first_stage(latents.float())

    def _learned(self, batch):
        return self.sd_model.get_learned_conditioning(batch)

    def _tokenize(self, text: str) -> list:
        engine = self.sd_model.text_processing_engine_l if self.pooled else self.sd_model.text_processing_engine
        return engine.tokenize_line(text)[0]

    def _weights(self, module):
        """Plain copies of ``module``'s inference-mode parameters and buffers (None when it has none)."""
        if self._plain is None:
            import torch

            tensors = dict(module.named_parameters())
            tensors.update(module.named_buffers())
            with torch.inference_mode(False):
                self._plain = {n: t.detach().clone() for n, t in tensors.items() if t.is_inference()}
        return self._plain or None

    def _unet(self, latents, t: int, context, vector=None):
        import torch

        self.memory.load_model_gpu(self.unet)  # (a no-op while it is loaded; brings it back if the VAE or CLIP
        options = dict(self._patcher.model_options.get("transformer_options", {}))  # pushed it out)
        loop = self._loop
        batch = latents.shape[0]
        options["cond_or_uncond"] = loop.order(batch) if loop is not None else [0]
        options["sigmas"] = self.unet.model.predictor.sigmas[int(t)].to(latents.device).repeat(batch)
        steps = torch.full((batch,), float(t), device=latents.device)
        extra = {} if vector is None else {"y": vector}
        if not torch.is_grad_enabled():
            out = self.diffusion_model(latents, steps, context=context, control=None, transformer_options=options,
                                       **extra)
            return out.to(self.dtype)
        weights = self._weights(self.diffusion_model)

        def run(latents, steps, context, extra):
            kwargs = dict(context=context, control=None, transformer_options=options, **extra)
            if weights:
                return torch.func.functional_call(self.diffusion_model, weights, (latents, steps), kwargs, strict=False)
            return self.diffusion_model(latents, steps, **kwargs)

        # Forge's blocks add in place (``x += n``), which autograd refuses; functionalize runs them out of place
        return torch.func.functionalize(run)(latents, steps, context, extra).to(self.dtype)

    @contextlib.contextmanager
    def _attention(self, loop: LoopState):
        self._patcher = patched_clone(self.unet, loop)
        try:
            yield
        finally:
            self._patcher = self.unet


@contextlib.contextmanager
def lend_model(sd_model, prompts: list[str], clip_skip: int) -> Iterator[ForgeDenoiser]:
    """As Forge's ``process_images`` prepares a batch: ``forge_objects`` reset to the original, the LoRAs activated,
    ``forge_objects`` taken from ``forge_objects_after_applying_lora``; CLIP skip set on the text engines. On exit the
    LoRAs are deactivated and unloaded, and ``forge_objects`` and the engines' CLIP skip are put back."""
    why = refusal(sd_model)
    if why:
        raise HostError(why)
    objects = sd_model.forge_objects
    engines = [getattr(sd_model, n) for n in TEXT_ENGINES if getattr(sd_model, n, None) is not None]
    skips = [getattr(engine, "clip_skip", None) for engine in engines]

    def reset():
        sd_model.forge_objects = sd_model.forge_objects_original.shallow_copy()

    try:
        with networks_applied(prompts, before_activate=reset):
            sd_model.forge_objects = sd_model.forge_objects_after_applying_lora.shallow_copy()
            sd_model.set_clip_skip(int(clip_skip))
            yield ForgeDenoiser(sd_model)
    finally:
        sd_model.forge_objects = objects
        for engine, skip in zip(engines, skips):
            if skip is not None:
                engine.clip_skip = skip
