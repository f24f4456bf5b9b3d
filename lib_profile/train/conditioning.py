"""What the face trainer does per model family: one conditioning object per family, chosen by the loaded model.

The step loop, caches, checkpoints, validation scoring and export are the same for every family
(:class:`~lib_profile.train.trainer.Trainer`); a family differs in its text encoders and their LoRA key names, the
UNet's extra inputs, the memory it needs, the validation pipeline and the LoRA's metadata. A conditioning object
holds those, and the cached caption conditioning:

* :class:`SD15Conditioning`: one CLIP ViT-L encoder (the run's CLIP skip, emphasis and chunks as the studio encodes
  prompts); kohya's SD1 keys (``lora_unet_<diffusers path>``, ``lora_te_``); ``ss_base_model_version`` ``sd_v1``.
* :class:`~lib_profile.train.sdxl.SDXLConditioning`: two encoders, pooled text and the size/crop numbers.

Calling a conditioning object with image indices (a CPU or device tensor of shape ``(batch,)``) gives
``(encoder_hidden_states, unet_kwargs)`` for those images; from the cache that is pure indexing, so a CUDA graph can
capture it (:class:`~lib_profile.train.step.TrainStep`).
"""

from __future__ import annotations

from typing import Any, Callable

from lib_profile import families
from lib_profile.lora import keys


class SD15Conditioning:
    """SD1.5: the caption embeddings of one CLIP text encoder (``model``: :class:`~lib_profile.hosts.diffusers.
    checkpoint.SD15`; ``cfg``: the run's :class:`~lib_profile.train.config.TrainConfig`)."""

    family = families.SD15
    needs_gb = 5.5  # GPU memory a run needs free, in GiB
    checkpointing_below_gb = 12.0  # gradient checkpointing on by default under this much free memory (GiB)

    def __init__(self, model, cfg, device):
        self.model, self.cfg, self.device = model, cfg, device

    # ------------------------------------------------------------------ the models

    def text_encoders(self) -> list[tuple[Any, Callable[[str], str]]]:
        """``(text encoder, kohya key function)`` pairs, in conditioning order."""
        return [(self.model.text_encoder, keys.te_module_key)]

    def unet_key(self) -> Callable[[str], str]:
        """diffusers UNet module path -> kohya key."""
        return keys.unet_module_key

    def text_device(self):
        """Where the frozen text encoders run: the CPU in the low-memory mode (captions and validation prompts are
        encoded once, so the GPU holds only the UNet), else the training device."""
        import torch

        if self.cfg.low_memory and not self.cfg.train_text_encoder:
            return torch.device("cpu")
        return self.device

    # ------------------------------------------------------------------ captions

    def cache(self, captions: list[str], sizes: list[tuple[int, int]], resolution: int) -> None:
        """Index the captions (``captions[i]`` of image i; ``sizes[i]``: its (height, width) before resizing) and
        encode each distinct one once, unless the text encoder trains."""
        import torch

        self.unique_captions = sorted(set(captions))
        self.caption_index = torch.tensor([self.unique_captions.index(c) for c in captions], device=self.device)
        self.sizes, self.resolution = sizes, resolution
        self.text_cache = None
        if not self.cfg.train_text_encoder:
            with torch.no_grad():
                self.text_cache = self._encode_all(self.unique_captions)

    def _encode_all(self, captions: list[str]):
        """``(len(captions), 77, width)`` caption conditioning on the device."""
        import torch

        from lib_profile.prompts import parse as prompts

        m = self.model
        return torch.cat([prompts.encode(m.text_encoder, m.tokenizer, c, self.cfg.clip_skip)[0]
                          for c in captions]).to(self.device)

    def __call__(self, idx) -> tuple[Any, dict[str, Any]]:
        """``(encoder_hidden_states (batch, 77, 768), {})`` of images ``idx``."""
        index = self.caption_index[idx.to(self.caption_index.device)]
        if self.text_cache is not None:
            return self.text_cache[index], {}
        return self._encode_all([self.unique_captions[i] for i in index.tolist()]), {}

    # ------------------------------------------------------------------ validation and export

    def validation_pipeline(self, scheduler):
        from diffusers import StableDiffusionPipeline

        m = self.model
        return StableDiffusionPipeline(vae=m.vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer, unet=m.unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)

    def validation_inputs(self, prompts: list[str], negative: str) -> dict[str, Any]:
        """The validation pipeline's text inputs for ``prompts``: the studio's conditioning on the diffusers host
        (emphasis, 75-token chunks, the run's CLIP skip, prompt and negative padded to the same chunk count)."""
        from lib_profile.hosts.diffusers.scheduled_embeds import ScheduledEmbeds

        m = self.model
        cond, uncond = ScheduledEmbeds(m.text_encoder, m.tokenizer, prompts, negative, self.cfg.clip_skip,
                                       self.cfg.validation_steps).at(0)
        return {"prompt_embeds": cond.to(self.device), "negative_prompt_embeds": uncond.to(self.device)}

    def metadata(self, resolution: int) -> dict[str, str]:
        """kohya's family fields of the LoRA's metadata (sd-scripts ``train_network.py``, ``sai_model_spec.py``)."""
        return {"ss_base_model_version": "sd_v1", "ss_v2": "False", "ss_clip_skip": str(self.cfg.clip_skip),
                "modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "stable-diffusion-v1/lora",
                "modelspec.implementation": "diffusers", "modelspec.resolution": f"{resolution}x{resolution}",
                "modelspec.prediction_type": "epsilon"}
