"""Inverting a photo and sampling from its inverted noise again, for a batch of prompts whose first is the photo's.

An :class:`Inversion` holds what each method leaves for the sampling that follows:

* ``ddim``: the inverted noise only; sampling is plain guided DDIM from it (the baseline; it drifts at a CFG > 1);
* ``null-text``: also one optimised negative-prompt embedding per step (``inversion.null_text``), used by every row;
* ``direct``: also the whole inversion trajectory. Direct Inversion (Ju et al., "PnP Inversion: Boosting
  Diffusion-based Editing with 3 Lines of Code", ICLR 2024, section 4) puts the source branch back on the trajectory
  after each step: ``delta = z*_{t-1} - z_src``. We add the same ``delta`` to every row, as null-text inversion's
  embeddings serve every row: so an edit that changes nothing (Plug-and-Play with the photo's own prompt, a
  Prompt-to-Prompt re-weight by 1) gives the photo back exactly. (The paper corrects the source branch only.)

Sampling runs a batch ``[negative x n, prompt x n]`` through ``Denoiser.eps`` once a step, row 0 the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from lib_profile.hosts.base import Interrupted, RunControl
from lib_profile.inversion import ddim, null_text

METHODS = ("direct", "null-text", "ddim")


@dataclass
class Inversion:
    method: str
    steps: int
    cfg_scale: float
    noise: Any  # z_T (1, 4, h, w)
    source_prompt: str
    negative_prompt: str
    chunks: int  # the conditionings' 77-token chunk count (every row is padded to it)
    trajectory: list = field(default_factory=list)  # direct: [z_0, ..., z_T]
    nulls: list = field(default_factory=list)  # null-text: per sampling step, the negative-prompt embedding


class Progress:
    """Steps over the phases of one photo job (inversion, null-text optimisation, sampling) as one count."""

    def __init__(self, control: Optional[RunControl], total: int):
        self.control, self.total, self.done = control or RunControl(), total, 0

    def stopped(self) -> bool:
        return bool(self.control.should_interrupt and self.control.should_interrupt())

    def step(self, *_args) -> None:
        self.done += 1
        if self.control.on_step is not None:
            self.control.on_step(self.done, self.total)
        if self.stopped():
            raise Interrupted(self.done, self.total)


def total_steps(method: str, steps: int) -> int:
    """The progress steps of inverting with ``method`` and sampling once."""
    return steps * (3 if method == "null-text" else 2)


def invert(den, latent, source_prompt: str, negative_prompt: str, method: str, steps: int, cfg_scale: float,
           chunks: int, iterations: int = 10, progress: Optional[Progress] = None) -> Inversion:
    """Invert the scaled latent ``latent`` (1, 4, h, w) of a photo under ``source_prompt`` with ``method``."""
    import torch

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    progress = progress or Progress(None, total_steps(method, steps))
    cond = den.conditioning(source_prompt, chunks)
    uncond = den.conditioning(negative_prompt, chunks)
    with torch.no_grad():
        trajectory = ddim.invert(lambda x, t: den.eps(x, t, cond), latent, steps, den.alphas_cumprod, progress.step)
    inv = Inversion(method, steps, cfg_scale, trajectory[-1], source_prompt, negative_prompt, chunks)
    if method == "direct":
        inv.trajectory = trajectory
    elif method == "null-text":
        inv.nulls = null_text.optimise(den, trajectory, cond, uncond, cfg_scale, steps, iterations, progress.step,
                                       progress.stopped)
        if len(inv.nulls) < steps:
            raise Interrupted(progress.done, progress.total)
    return inv


def sample(den, inv: Inversion, prompts: list[str], controller=None, features: Optional[Callable] = None,
           progress: Optional[Progress] = None):
    """Latents ``(len(prompts), 4, h, w)`` sampled from ``inv``'s noise, one row per prompt (``prompts[0]`` is the
    source: with ``inv.source_prompt`` it is the reconstruction), with ``controller`` (attention) and ``features``
    (``hosts.denoiser.FeatureHook``) installed by the denoiser."""
    import torch

    n = len(prompts)
    progress = progress or Progress(None, inv.steps)
    with torch.no_grad():
        conds = torch.cat([den.conditioning(p, inv.chunks) for p in prompts])
        negative = den.conditioning(inv.negative_prompt, inv.chunks)
        x = inv.noise.repeat(n, 1, 1, 1)
        ac = den.alphas_cumprod
        with den.controlled(controller, inv.steps, n, features):
            for i, t in enumerate(ddim.timesteps(inv.steps)):
                uncond = (inv.nulls[i].to(den.dtype) if inv.nulls else negative).repeat(n, 1, 1)
                eps_u, eps_c = den.eps(torch.cat([x, x]), t, torch.cat([uncond, conds])).chunk(2)
                x = ddim.denoise_step(x, eps_u + inv.cfg_scale * (eps_c - eps_u), t, inv.steps, ac)
                if inv.trajectory:  # Direct Inversion: back on the trajectory, every row alike
                    x = x + (inv.trajectory[inv.steps - i - 1] - x[:1])
                if controller is not None:
                    x = controller.step_end(i, x)
                progress.step()
    return x
