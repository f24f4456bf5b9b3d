"""The face LoRA trainer: intake folder + SD1.5 or SDXL checkpoint -> a kohya LoRA chosen by identity score.

Runs in its own process. Speed by design: VAE latents (of each crop and its mirror) and the caption
embeddings are computed once; every step is then one UNet forward/backward on cached tensors; the
loss is read back only at log steps. All randomness comes from one CPU generator whose state is saved
with each checkpoint, so a cancelled run resumed with ``--resume`` ends with the same weights as an
uninterrupted one. Every ``validate_every`` steps it renders fixed validation portraits, scores them
with the intake's identity embedder against the person's reference embedding, and keeps that
checkpoint; at the end the best one (or the average of the top k) is exported.

This module holds the run itself (:class:`Trainer`: the step loop, cancel and resume); its stages live beside it:
:mod:`.config` (settings), :mod:`.intake_data` (the intake folder), :mod:`.events` (events, cancel),
:mod:`.model_setup` (model, LoRA layers, caches, optimiser), :mod:`.conditioning` and :mod:`.sdxl` (what each
model family does differently: text encoders, UNet inputs, keys, metadata), :mod:`.checkpoints` (state, checkpoints),
:mod:`.validation` (validation portraits and scores), :mod:`.export` (the LoRA file and report) and
:mod:`.contact_sheet` (the validation sheet).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

from lib_profile.train.checkpoints import Checkpoints
from lib_profile.train.config import TrainConfig
from lib_profile.train.contact_sheet import ValidationSheet
from lib_profile.train.events import Cancel, Events
from lib_profile.train.export import Export
from lib_profile.train.intake_data import IntakeData, read_intake
from lib_profile.train.model_setup import ModelSetup
from lib_profile.train.runlock import RunLock
from lib_profile.train.step import TrainStep, make_scaler
from lib_profile.train.validation import VALIDATION_NEGATIVE, Validation

__all__ = ["CANCELLED", "TICK_S", "VALIDATION_NEGATIVE", "Events", "IntakeData", "TrainConfig", "Trainer",
           "read_intake"]

CANCELLED = 3  # exit code of a cancelled run (a resumable checkpoint is on disk)

TICK_S = 0.5  # at most two progress ticks a second between log steps (no loss: that would wait for the GPU)


class Trainer(ModelSetup, Checkpoints, Validation, Export, ValidationSheet):
    """One training run: ``run()`` trains from an intake folder and a checkpoint into ``out`` (see the module)."""

    def __init__(self, intake: str | Path, checkpoint: Any, out: str | Path, config: TrainConfig,
                 events: Events | None = None, data_dir: str | Path | None = None):
        """``checkpoint``: a checkpoint file or name (``"tiny"``), or a model already loaded (an SD1.5 model of
        :func:`~lib_profile.hosts.diffusers.checkpoint.load_sd15`, an SDXL one of :func:`~lib_profile.train.sdxl.
        sdxl_model`); the trainer adds LoRA layers to its modules."""
        config.validate()
        self.cfg = config
        self.intake = read_intake(intake)
        self.out = Path(out)
        self.events = events or Events(None)
        self.checkpoint = checkpoint
        self.data_dir = data_dir
        self.state_file = self.out / "state" / "state.pt"

    # ------------------------------------------------------------------ the run

    def run(self, resume: bool = False, cancel_file: Optional[Path] = None) -> dict[str, Any]:
        """Train (or continue from the saved state with ``resume``); returns ``{"file", "report"}``, or
        ``{"cancelled": True, "step"}`` when stopped. Holds the run folder's lock throughout: raises
        :class:`~lib_profile.train.runlock.RunLocked` at once when another trainer is writing there."""
        with RunLock(self.out):
            return self._run(resume, cancel_file)

    def _run(self, resume: bool, cancel_file: Optional[Path]) -> dict[str, Any]:
        import torch
        from diffusers import DDPMScheduler

        cfg, ev = self.cfg, self.events
        self.out.mkdir(parents=True, exist_ok=True)
        cancel = Cancel(Path(cancel_file) if cancel_file else self.out / "CANCEL")
        cancel.file.unlink(missing_ok=True)
        cancel.install()
        started = time.time()
        try:
            self.prepare()
            noise_sched = DDPMScheduler.from_config(self.model.scheduler_config)
            alphas = noise_sched.alphas_cumprod.to(self.device)
            optimizer = self._optimizer()
            gen = torch.Generator().manual_seed(cfg.seed)
            step, history = (self._load_state(gen, optimizer) if resume else (0, []))
            scores_file = self.out / "validation" / "scores.json"
            if resume and scores_file.is_file():
                self._scores = {int(k): v for k, v in json.loads(scores_file.read_text("utf-8")).items()
                                if int(k) <= step}
            elif not resume:
                for old in ("checkpoints", "validation"):
                    for f in (self.out / old).glob("step-*"):
                        f.unlink()
            n = len(self.intake.crops)
            train_step = TrainStep(self.model.unet, self.latents, None, None, alphas, optimizer, self.amp_dtype,
                                   self.device, make_scaler(self.amp_dtype, self.device), condition=self.conditioning)
            if self._graphed():
                try:
                    train_step.capture(cfg.batch_size)
                except Exception as exc:  # noqa: BLE001 - any capture failure: run the same step eagerly
                    ev("phase", phase="train", note=f"CUDA graph capture failed, running eagerly: {exc}"[:300])
            ev("phase", phase="train", step=step, steps=cfg.steps, device=str(self.device),
               cuda_graph=train_step.graph is not None, family=self.conditioning.family.name,
               resolution=cfg.resolution, gradient_checkpointing=bool(cfg.gradient_checkpointing),
               optimizer=type(optimizer).__name__)
            loss_sum = torch.zeros((), device=self.device)
            window_start, window_steps = time.perf_counter(), 0
            last_tick = 0.0
            while step < cfg.steps:
                if cancel:
                    self._save_state(step, gen, optimizer, history)
                    ev("phase", phase="cancelled", step=step, steps=cfg.steps, resumable=True)
                    return {"cancelled": True, "step": step}
                idx = torch.randint(n, (cfg.batch_size,), generator=gen)
                flip = torch.randint(2, (cfg.batch_size,), generator=gen)
                t = torch.randint(0, noise_sched.config.num_train_timesteps, (cfg.batch_size,), generator=gen)
                noise = torch.randn((cfg.batch_size,) + tuple(self.latents.shape[2:]), generator=gen)
                loss_sum += train_step(idx, flip, t, noise)
                step += 1
                window_steps += 1
                if time.perf_counter() - last_tick >= TICK_S and step % cfg.log_every:  # progress between log steps
                    last_tick = time.perf_counter()
                    ev("tick", phase="train", step=step, steps=cfg.steps)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    now = time.perf_counter()
                    rate = window_steps / max(now - window_start, 1e-9)
                    mean_loss = float(loss_sum) / window_steps  # the one sync, at log steps only
                    ev("step", phase="train", step=step, steps=cfg.steps, loss=round(mean_loss, 6),
                       it_per_s=round(rate, 3), eta_s=round((cfg.steps - step) / max(rate, 1e-9), 1))
                    history.append({"step": step, "loss": mean_loss})
                    loss_sum.zero_()
                    window_start, window_steps = now, 0
                if step % cfg.validate_every == 0 or step == cfg.steps:
                    self._checkpoint(step)
                if step % cfg.save_every == 0 and step < cfg.steps:
                    self._save_state(step, gen, optimizer, history)
            self._save_state(step, gen, optimizer, history)
            result = self._finish(history, started)
            ev("phase", phase="done", file=result["file"], step=step)
            return result
        finally:
            cancel.restore()
