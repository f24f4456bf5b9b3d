"""Loading the model, adding the LoRA layers, caching latents and caption embeddings, the optimiser
(a part of :class:`~lib_profile.train.trainer.Trainer`, which gives ``cfg``, ``intake``, ``out``, ``events``)."""

from __future__ import annotations


import numpy as np
from PIL import Image

from lib_profile.hosts.base import HostError
from lib_profile.train import lora
from lib_profile.train.step import needs_scaler


class ModelSetup:
    """The model, its LoRA layers, the cached tensors and the optimiser of a run."""

    def prepare(self) -> None:
        """Load the model, add the LoRA layers and cache latents and text (once)."""
        if getattr(self, "_prepared", False):
            return
        self.events("phase", phase="load")
        self._load()
        self.events("phase", phase="cache", images=len(self.intake.crops))
        self._cache()
        self._prepared = True

    def denoising_loss(self, seed: int = 0, timesteps: tuple[int, ...] = (100, 300, 500, 700, 900)) -> float:
        """Mean noise-prediction error over every crop at fixed timesteps and noise (for measuring)."""
        import torch
        import torch.nn.functional as F
        from diffusers import DDPMScheduler

        from lib_profile.hosts.diffusers.checkpoint import SCHEDULER_CONFIG

        self.prepare()
        alphas = DDPMScheduler.from_config(SCHEDULER_CONFIG).alphas_cumprod.to(self.device)
        gen = torch.Generator().manual_seed(seed)
        total, count = 0.0, 0
        self.model.unet.eval()
        with torch.no_grad(), torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.gpu):
            for i in range(len(self.intake.crops)):
                lat = self.latents[i, 0:1]
                cond = self._text(self.caption_index[i:i + 1])
                for t in timesteps:
                    noise = torch.randn(lat.shape, generator=gen).to(self.device, lat.dtype)
                    a = alphas[t]
                    pred = self.model.unet(a.sqrt() * lat + (1 - a).sqrt() * noise,
                                           torch.tensor([t], device=self.device), encoder_hidden_states=cond).sample
                    total += float(F.mse_loss(pred.float(), noise.float()))
                    count += 1
        self.model.unet.train()
        return total / count

    def _load(self):
        import torch

        from lib_profile.hosts.diffusers.host import resolve_checkpoint
        from lib_profile.hosts.diffusers.checkpoint import load_sd15
        from lib_profile import paths

        cfg = self.cfg
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.gpu = self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.gpu and torch.cuda.is_bf16_supported() else torch.float16
        path = resolve_checkpoint(self.checkpoint, self.data_dir)
        self.model = load_sd15(path, paths.tokenizer_dir(self.data_dir))
        self.model_path = path
        m = self.model
        # frozen weights in half precision on a GPU (the LoRA layers stay float32 for the optimiser)
        frozen = self.amp_dtype if self.gpu else torch.float32
        m.unet.to(self.device, frozen).requires_grad_(False)
        m.text_encoder.to(self.device, frozen).requires_grad_(False)
        m.vae.to(self.device).requires_grad_(False)
        if self.gpu:
            free = torch.cuda.mem_get_info(self.device)[0] / 2**30
            if free < 5.5:
                raise HostError(f"The GPU has {free:.1f} GB free; training needs about 6 GB. Close other programs "
                                "(or unload the WebUI's model) and try again.")
            if cfg.gradient_checkpointing is None:
                cfg.gradient_checkpointing = free < 12
        if cfg.gradient_checkpointing:
            m.unet.enable_gradient_checkpointing()
        m.unet.train()
        self.layers = lora.inject(m.unet, m.text_encoder, cfg.rank, cfg.alpha, cfg.seed,
                               feed_forward=cfg.feed_forward, train_text=cfg.train_text_encoder)

    def _cache(self):
        """Latents of every crop and its mirror, and the caption embeddings, computed once."""
        import torch

        from lib_profile.prompts import parse as prompts

        m, res = self.model, self.cfg.resolution
        latents = []
        with torch.no_grad():
            for path in self.intake.crops:
                img = Image.open(path).convert("RGB").resize((res, res), Image.LANCZOS)
                arr = torch.from_numpy(np.asarray(img, np.float32) / 127.5 - 1.0).permute(2, 0, 1)
                pair = torch.stack([arr, arr.flip(-1)]).to(self.device)
                dist = m.vae.encode(pair).latent_dist
                latents.append(dist.mean * m.vae.config.scaling_factor)
        self.latents = torch.stack(latents)  # (N, 2, 4, h, w): [crop, mirror]
        self.unique_captions = sorted(set(self.intake.captions))
        self.caption_index = torch.tensor([self.unique_captions.index(c) for c in self.intake.captions])
        if not self.cfg.train_text_encoder:
            with torch.no_grad():
                self.text_cache = torch.cat([prompts.encode(m.text_encoder, m.tokenizer, c, self.cfg.clip_skip)[0]
                                             for c in self.unique_captions])

    def _text(self, index):
        """Caption conditioning for a batch: from the cache, or encoded now when the text encoder trains."""
        import torch

        from lib_profile.prompts import parse as prompts

        if not self.cfg.train_text_encoder:
            return self.text_cache[index.to(self.text_cache.device)]
        m = self.model
        return torch.cat([prompts.encode(m.text_encoder, m.tokenizer, self.unique_captions[i], self.cfg.clip_skip)[0]
                          for i in index.tolist()])

    def _optimizer(self):
        import torch

        params = lora.parameters(self.layers)
        if self.cfg.optimizer == "adamw8bit":
            try:
                import bitsandbytes as bnb
            except ImportError as exc:
                raise HostError("optimizer adamw8bit needs bitsandbytes: pip install bitsandbytes") from exc
            return bnb.optim.AdamW8bit(params, lr=self.cfg.learning_rate)
        return torch.optim.AdamW(params, lr=self.cfg.learning_rate, weight_decay=1e-2, fused=self.gpu or None,
                                 capturable=self._graphed())

    def _graphed(self) -> bool:
        """Whether the training step runs as a CUDA graph: on a GPU, with cached captions and plain AdamW."""
        cfg = self.cfg
        return (self.gpu and cfg.cuda_graph and not cfg.train_text_encoder and cfg.optimizer == "adamw"
                and not needs_scaler(self.amp_dtype, self.device))  # a loss scaler checks for inf on the host
