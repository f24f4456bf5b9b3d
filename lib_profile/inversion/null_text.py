"""Null-text inversion (Mokady et al., "Null-text Inversion for Editing Real Images using Guided Diffusion Models",
CVPR 2023, section 3.2 and Algorithm 1).

Plain DDIM inversion is exact only at guidance 1; sampled again at a CFG of 7.5 the photo drifts. Null-text inversion
keeps the inverted noise and the prompt, and optimises, step by step from the noise down, the *negative-prompt
embedding* of that step so the guided step lands on the inversion's trajectory: for step ``i`` at timestep ``t``,
``min || z*_{t-1} - DDIM(z_t, eps_u(emb_i) + w (eps_c - eps_u(emb_i))) ||^2`` by Adam (lr ``0.01 (1 - i/100)``,
up to ``iterations`` updates, stopped early once the loss is below ``1e-5 + 2e-5 i``), each step starting from the
previous step's embedding. The paper's defaults: 50 steps, w = 7.5, 10 iterations.
"""

from __future__ import annotations

from typing import Callable, Optional

from lib_profile.inversion import ddim


def optimise(den, trajectory: list, cond, uncond, cfg_scale: float, steps: int, iterations: int = 10,
             on_step: Optional[Callable[[int], None]] = None, should_stop: Optional[Callable[[], bool]] = None):
    """The per-step negative-prompt embeddings (``steps`` tensors shaped like ``uncond``, ``(1, keys, dim)``, float32
    on the denoiser's device) for a trajectory from :func:`ddim.invert` made under ``cond``. ``den``: a
    ``hosts.denoiser.Denoiser``; ``on_step(i)`` after each step; ``should_stop()`` True stops it (between two updates;
    the caller raises ``Interrupted``)."""
    import torch

    ac = den.alphas_cumprod
    embedding = uncond.detach().float()
    latent = trajectory[-1]
    nulls = []
    for i, t in enumerate(ddim.timesteps(steps)):
        target = trajectory[steps - i - 1]
        a_t, a_prev = ddim.alpha(ac, t), ddim.alpha(ac, ddim.previous(t, steps))
        with torch.no_grad():
            eps_c = den.eps(latent, t, cond).float()
        embedding = embedding.clone().requires_grad_(True)
        adam = torch.optim.Adam([embedding], lr=1e-2 * (1.0 - i / 100.0))
        for _ in range(iterations):
            if should_stop is not None and should_stop():
                return nulls
            with torch.enable_grad():
                eps_u = den.eps(latent, t, embedding.to(den.dtype)).float()
                guided = eps_u + cfg_scale * (eps_c - eps_u)
                loss = torch.nn.functional.mse_loss(ddim.step(latent.float(), guided, a_t, a_prev), target.float())
                (grad,) = torch.autograd.grad(loss, [embedding])
            embedding.grad = grad
            adam.step()
            if loss.item() < 1e-5 + i * 2e-5:
                break
        embedding = embedding.detach()
        nulls.append(embedding)
        with torch.no_grad():
            eps_u = den.eps(latent, t, embedding.to(den.dtype)).float()
            latent = ddim.step(latent.float(), eps_u + cfg_scale * (eps_c - eps_u), a_t, a_prev).to(latent.dtype)
        if on_step is not None:
            on_step(i)
    return nulls
