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

        self.prepare()
        alphas = DDPMScheduler.from_config(self.model.scheduler_config).alphas_cumprod.to(self.device)
        gen = torch.Generator().manual_seed(seed)
        total, count = 0.0, 0
        self.model.unet.eval()
        with torch.no_grad(), torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.gpu):
            for i in range(len(self.intake.crops)):
                lat = self.latents[i, 0:1]
                cond, extra = self.conditioning(torch.tensor([i]))
                for t in timesteps:
                    noise = torch.randn(lat.shape, generator=gen).to(self.device, lat.dtype)
                    a = alphas[t]
                    pred = self.model.unet(a.sqrt() * lat + (1 - a).sqrt() * noise,
                                           torch.tensor([t], device=self.device), encoder_hidden_states=cond,
                                           **extra).sample
                    total += float(F.mse_loss(pred.float(), noise.float()))
                    count += 1
        self.model.unet.train()
        return total / count

    def _load(self):
        import torch

        from lib_profile.train import loading

        cfg = self.cfg
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.gpu = self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.gpu and torch.cuda.is_bf16_supported() else torch.float16
        self.model = m = loading.load_model(self.checkpoint, self.data_dir)
        self.model_path = m.path
        self.conditioning = cond = loading.for_model(m, cfg, self.device)
        family = cond.family
        if cfg.resolution is None:
            cfg.resolution = family.native_size
        if self.gpu:
            free = torch.cuda.mem_get_info(self.device)[0] / 2**30
            if free < cond.needs_gb:
                raise HostError(f"The GPU has {free:.1f} GB free; {family.name} training needs about "
                                f"{cond.needs_gb:g} GB" + ("" if cfg.low_memory else " (less with the low-memory mode)")
                                + ". Close other programs (or unload the WebUI's model) and try again.")
            if cfg.gradient_checkpointing is None:
                cfg.gradient_checkpointing = cfg.low_memory or free < cond.checkpointing_below_gb
        if cfg.low_memory:
            cfg.gradient_checkpointing = True
        # frozen weights in half precision on a GPU (the LoRA layers stay float32 for the optimiser); the VAE stays
        # float32 (SDXL's overflows in float16); the low-memory mode keeps frozen text encoders on the CPU
        frozen = self.amp_dtype if self.gpu else torch.float32
        # the low-memory mode moves the UNet to the GPU after the latents are cached (_cache): the VAE's activations
        # at 1024 px and the UNet's weights need not be there at once
        m.unet.to("cpu" if cfg.low_memory else self.device, frozen).requires_grad_(False)
        text_device = cond.text_device()
        for encoder, _key in cond.text_encoders():
            encoder.to(text_device, frozen if text_device.type == "cuda" else torch.float32).requires_grad_(False)
        m.vae.to(self.device).requires_grad_(False)
        if cfg.gradient_checkpointing:
            m.unet.enable_gradient_checkpointing()
        m.unet.train()
        self.layers = lora.inject(m.unet, None, cfg.rank, cfg.alpha, cfg.seed, feed_forward=cfg.feed_forward,
                                  train_text=cfg.train_text_encoder, unet_key=cond.unet_key(),
                                  text_encoders=cond.text_encoders())

    def _cache(self):
        """Latents of every crop and its mirror, and the caption conditioning, computed once."""
        import torch

        m, res = self.model, self.cfg.resolution
        latents, sizes = [], []
        with torch.no_grad():
            for path in self.intake.crops:
                img = Image.open(path).convert("RGB")
                sizes.append((img.height, img.width))
                img = img.resize((res, res), Image.LANCZOS)
                arr = torch.from_numpy(np.asarray(img, np.float32) / 127.5 - 1.0).permute(2, 0, 1)
                pair = torch.stack([arr, arr.flip(-1)]).to(self.device)
                one_by_one = self.cfg.low_memory  # the VAE's activations of one image at a time
                dists = [m.vae.encode(x).latent_dist for x in (pair.split(1) if one_by_one else [pair])]
                latents.append(torch.cat([d.mean for d in dists]) * m.vae.config.scaling_factor)
        self.latents = torch.stack(latents)  # (N, 2, 4, h, w): [crop, mirror]
        self.conditioning.cache(self.intake.captions, sizes, res)
        m.unet.to(self.device)  # (already there unless in the low-memory mode)

    def _optimizer(self):
        import torch

        params = lora.parameters(self.layers)
        if self.cfg.optimizer == "adamw8bit" or (self.cfg.low_memory and self.gpu):
            try:
                import bitsandbytes as bnb
            except ImportError as exc:
                if self.cfg.optimizer == "adamw8bit":
                    raise HostError("optimizer adamw8bit needs bitsandbytes: pip install bitsandbytes") from exc
                bnb = None  # the low-memory mode without bitsandbytes: plain AdamW (the LoRA's states are small)
            if bnb is not None:
                return bnb.optim.AdamW8bit(params, lr=self.cfg.learning_rate)
        return torch.optim.AdamW(params, lr=self.cfg.learning_rate, weight_decay=1e-2, fused=self.gpu or None,
                                 capturable=self._graphed())

    def _graphed(self) -> bool:
        """Whether the training step runs as a CUDA graph: on a GPU, with cached captions and plain AdamW."""
        cfg = self.cfg
        return (self.gpu and cfg.cuda_graph and not cfg.train_text_encoder and cfg.optimizer == "adamw"
                and not cfg.low_memory  # may step 8-bit AdamW
                and not needs_scaler(self.amp_dtype, self.device))  # a loss scaler checks for inf on the host
