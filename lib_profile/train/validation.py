"""Validation portraits at checkpoints, scored by identity similarity to the person
(a part of :class:`~lib_profile.train.trainer.Trainer`, which gives ``cfg``, ``intake``, ``out``, ``events``)."""

from __future__ import annotations

import json

import numpy as np

from lib_profile.train.intake_data import IntakeData

VALIDATION_NEGATIVE = "blurry, lowres, deformed"  # the validation portraits' negative prompt


class Validation:
    """The validation prompts, their conditioning, and rendering and scoring the portraits."""

    def validation_prompts(self) -> list[str]:
        who = f"{self.intake.token} {self.intake.class_word}"
        base = [f"portrait photo of {who}, looking at the camera, soft studio light",
                f"close-up photo of {who}, natural light, neutral background",
                f"photo of {who}, smiling, head and shoulders",
                f"professional headshot of {who}, plain grey background"]
        return [base[i % len(base)] for i in range(self.cfg.validation_images)]

    def validation_conditioning(self, prompts: list[str], negative: str = VALIDATION_NEGATIVE) -> dict:
        """The validation pipeline's text inputs for ``prompts`` (``prompt_embeds``, ``negative_prompt_embeds``,
        each ``(len(prompts), 77 * chunks, hidden)``, and on SDXL the pooled ones): on SD1.5 as the studio makes
        them on the diffusers host (emphasis, 75-token chunks, the run's CLIP skip, prompt and negative padded to
        the same chunk count); see the family's :mod:`~lib_profile.train.conditioning` object."""
        return self.conditioning.validation_inputs(prompts, negative)

    def _validate(self, step: int) -> None:
        import torch

        from lib_profile.hosts.diffusers import samplers

        m, cfg = self.model, self.cfg
        size = cfg.validation_size or cfg.resolution
        if not hasattr(self, "_pipe"):
            sched = samplers.make_scheduler("DPM++ 2M Karras", None, m.scheduler_config)[0]
            self._pipe = self.conditioning.validation_pipeline(sched)
            self._pipe.set_progress_bar_config(disable=True)
            if cfg.low_memory:  # decode 1024 px in tiles: the VAE's activations at full size are several GB
                self._pipe.enable_vae_tiling()
            self._scorer = _Scorer(self.intake)
        folder = self.out / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        scores = []
        m.unet.eval()
        prompts = self.validation_prompts()
        # one batched call per `batch_size` portraits; one at a time in the low-memory mode
        per_call = 1 if cfg.gradient_checkpointing else max(1, min(len(prompts), cfg.batch_size))
        with torch.no_grad(), torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.gpu):
            for start in range(0, len(prompts), per_call):
                ks = range(start, min(start + per_call, len(prompts)))
                text = self.validation_conditioning([prompts[k] for k in ks])
                images = self._pipe(**text, width=size, height=size, num_inference_steps=cfg.validation_steps,
                                    guidance_scale=6.5,
                                    generator=[torch.Generator().manual_seed(1000 + k) for k in ks]).images
                for k, image in zip(ks, images):
                    image.save(folder / f"step-{step:06d}-{k}.png")
                    scores.append(self._scorer(image))
        m.unet.train()
        found = [s for s in scores if s is not None]
        self._scores = getattr(self, "_scores", {})
        self._scores[step] = {"similarities": scores, "mean": float(np.mean(found)) if found else None,
                              "faces_found": len(found)}
        (folder / "scores.json").write_text(json.dumps(self._scores), "utf-8")
        self.events("validation", phase="validate", step=step, identity=self._scores[step]["mean"],
                    faces_found=len(found), images=len(scores))


def _Scorer(intake: IntakeData):
    """Identity similarity of a validation image to the person (None when no face is found)."""
    from lib_profile.identity.score import IdentityScorer

    ref = None if intake.reference is None else {"embedder": intake.embedder, "vector": intake.reference}
    return IdentityScorer(ref)
