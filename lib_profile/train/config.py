"""The trainer's settings (:class:`TrainConfig`) and their checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


from lib_profile.hosts.base import HostError


@dataclass
class TrainConfig:
    name: str
    steps: int = 800
    rank: int = 32
    alpha: float = 32.0
    learning_rate: float = 1e-4
    batch_size: int = 4
    resolution: Optional[int] = None  # default: the family's native size (SD1.5 512, SDXL 1024; 768 fits small cards)
    seed: int = 1234
    clip_skip: int = 2
    feed_forward: bool = False
    train_text_encoder: bool = False
    gradient_checkpointing: Optional[bool] = None  # None: on when the GPU has little free (SD1.5 12 GB, SDXL 24 GB)
    optimizer: str = "adamw"  # "adamw" (fused on GPU) or "adamw8bit" (needs bitsandbytes)
    low_memory: bool = False  # the 12 GB mode: checkpointing, 8-bit AdamW when bitsandbytes is there, encoders on CPU
    cuda_graph: bool = True  # on a GPU, replay each step as one CUDA graph (lib_profile/train/step.py)
    validate_every: int = 100
    validation_images: int = 4
    validation_steps: int = 20
    validation_size: Optional[int] = None  # default: the training resolution
    select: str = "top3"  # "best" checkpoint, "topK" average of the K best, or "last"
    log_every: int = 10
    save_every: int = 50
    device: Optional[str] = None
    identity_in_lora: bool = True  # the face embedding in the LoRA's metadata (else only in the .identity.json beside it)

    def validate(self) -> None:
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", self.name or "") or ".." in self.name:
            raise HostError(f"name must be 1-64 letters, digits, '_', '-' or '.', not {self.name!r}")
        checks = [
            (self.steps >= 1, f"steps must be at least 1, not {self.steps}"),
            (1 <= self.rank <= 256, f"rank must be within 1..256, not {self.rank}"),
            (0 < self.alpha <= 1024, f"alpha must be within (0, 1024], not {self.alpha}"),
            (0 < self.learning_rate < 1, f"learning rate must be within (0, 1), not {self.learning_rate}"),
            (1 <= self.batch_size <= 64, f"batch size must be within 1..64, not {self.batch_size}"),
            (self.resolution is None or 64 <= self.resolution <= 1024 and self.resolution % 64 == 0,
             f"resolution must be a multiple of 64 within 64..1024, not {self.resolution}"),
            (1 <= self.clip_skip <= 4, f"clip skip must be within 1..4, not {self.clip_skip}"),
            (self.validate_every >= 1 and self.validation_images >= 0, "validate_every must be >= 1"),
            (self.optimizer in ("adamw", "adamw8bit"), f"optimizer must be adamw or adamw8bit, not {self.optimizer}"),
            (self.select in ("best", "last") or re.fullmatch(r"top[1-9]", self.select) is not None,
             f"select must be best, last or top1..top9, not {self.select}"),
        ]
        for ok, message in checks:
            if not ok:
                raise HostError(message)
