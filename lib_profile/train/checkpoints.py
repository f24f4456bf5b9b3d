"""The run's resumable state and its LoRA checkpoints at validation steps
(a part of :class:`~lib_profile.train.trainer.Trainer`, which gives ``cfg``, ``intake``, ``out``, ``events``)."""

from __future__ import annotations

from dataclasses import asdict


from lib_profile.hosts.base import HostError
from lib_profile.train import lora
from lib_profile.train.config import TrainConfig


class Checkpoints:
    """Saving and loading the resumable state; a checkpoint (then validation) at a step."""

    def _save_state(self, step: int, gen, optimizer, history: list) -> None:
        import torch

        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".partial")
        torch.save({"step": step, "lora": lora.kohya_state(self.layers), "optimizer": optimizer.state_dict(),
                    "generator": gen.get_state(), "history": history, "config": asdict(self.cfg)}, tmp)
        tmp.replace(self.state_file)

    def _load_state(self, gen, optimizer) -> tuple[int, list]:
        import torch

        if not self.state_file.is_file():
            raise HostError(f"Nothing to resume in {self.out}: no saved state. Start without --resume.")
        state = torch.load(self.state_file, map_location="cpu", weights_only=False)
        saved = {**asdict(TrainConfig(name=self.cfg.name)), **state["config"]}  # settings added since: defaults
        now = asdict(self.cfg)
        differ = [k for k in ("rank", "alpha", "learning_rate", "batch_size", "resolution", "seed", "clip_skip",
                              "feed_forward", "train_text_encoder", "optimizer", "low_memory")
                  if saved.get(k) != now.get(k)]
        if differ:
            raise HostError(f"Cannot resume with different settings ({', '.join(differ)}); use the first run's.")
        lora.load_kohya_state(self.layers, state["lora"])
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        return int(state["step"]), list(state["history"])

    def _checkpoint(self, step: int) -> None:
        from safetensors.torch import save_file

        folder = self.out / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step-{step:06d}.safetensors"
        tmp = path.with_suffix(".partial")
        save_file(lora.kohya_state(self.layers), str(tmp))
        tmp.replace(path)
        if self.cfg.validation_images:
            self.events("phase", phase="validate", step=step)
            self._validate(step)
