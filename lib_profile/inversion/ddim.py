"""Deterministic DDIM (Song et al., "Denoising Diffusion Implicit Models", ICLR 2021) forwards and backwards.

One step of DDIM with eta = 0 (eq. 12) from timestep ``t`` to ``s``, for a noise prediction ``eps``::

    x0 = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t)
    x_s = sqrt(a_s) * x0 + sqrt(1 - a_s) * eps

with ``a_t`` = alpha-bar_t (``alphas_cumprod[t]``). Sampling runs it from ``t`` to ``t - 1000 // steps``; DDIM
inversion runs it the other way (``s > t``), with ``eps`` taken at the later timestep - the approximation of
Mokady et al. (null-text inversion, CVPR 2023, section 3, "DDIM inversion"), as in their code (``next_step``).
Timesteps are SD's "leading" spacing with offset 1 (``1, 21, ..., 981`` for 50 steps), as A1111's DDIM and
diffusers' ``DDIMScheduler`` with SD1.5's config; before ``t = 1`` comes alpha-bar_0 (SD's ``set_alpha_to_one =
False``).
"""

from __future__ import annotations

from typing import Callable, Optional


def timesteps(steps: int) -> list[int]:
    """The sampling timesteps, high to low: ``[981, 961, ..., 1]`` for 50 steps."""
    ratio = 1000 // steps
    return [i * ratio + 1 for i in range(steps)][::-1]


def previous(t: int, steps: int) -> int:
    """The timestep a sampling step from ``t`` lands on (negative: the end, alpha-bar_0)."""
    return t - 1000 // steps


def alpha(alphas_cumprod, t: int) -> float:
    """alpha-bar_t, with alpha-bar_0 standing for every ``t < 0`` (the last step's target)."""
    return float(alphas_cumprod[max(t, 0)])


def step(x, eps, a_from: float, a_to: float):
    """DDIM (eta = 0) from a latent at alpha-bar ``a_from`` to alpha-bar ``a_to`` (either direction)."""
    x0 = (x - (1 - a_from) ** 0.5 * eps) / a_from ** 0.5
    return a_to ** 0.5 * x0 + (1 - a_to) ** 0.5 * eps


def denoise_step(x, eps, t: int, steps: int, alphas_cumprod):
    """One sampling step from ``t``: the latent at ``previous(t, steps)``."""
    return step(x, eps, alpha(alphas_cumprod, t), alpha(alphas_cumprod, previous(t, steps)))


def invert(eps_at: Callable, z0, steps: int, alphas_cumprod, on_step: Optional[Callable[[int], None]] = None):
    """DDIM inversion of ``z0`` ``(1, 4, h, w)``: the trajectory ``[z0, z_1, ..., z_T]`` (``steps + 1`` latents, ``z_k``
    at the k-th timestep from the bottom, ``z_T`` the inverted noise). ``eps_at(latent, t)``: the noise prediction
    under the source prompt (guidance 1, as the papers invert). ``on_step(k)`` after each step."""
    out = [z0]
    latent = z0
    for k, t in enumerate(reversed(timesteps(steps))):
        eps = eps_at(latent, t)
        latent = step(latent, eps, alpha(alphas_cumprod, previous(t, steps)), alpha(alphas_cumprod, t))
        out.append(latent)
        if on_step is not None:
            on_step(k)
    return out
