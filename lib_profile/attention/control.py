"""The host-neutral attention controller.

A host that supports attention control calls, for every UNet attention module on every sampling step,
``controller.needs_probs(site, step, queries)``; only when that is true does the module leave the fast fused
(SDPA) path: it computes the attention probabilities explicitly, hands them to
``controller.probs(call, probs)`` (which may record them or return changed ones) and uses what comes
back. Probabilities are ``(batch, heads, queries, keys)``; ``call.cond_rows`` / ``call.uncond_rows`` say
which batch rows belong to the prompt and which to the negative prompt (hosts order them differently).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class Site:
    """One attention module of the UNet."""

    index: int  # position among the UNet's attention modules, in forward order
    name: str  # module path in the host's model (diffusers or compvis naming)
    place: str  # "down" | "mid" | "up"
    cross: bool  # True: attends to the prompt (attn2); False: self-attention (attn1)
    heads: int


@dataclass
class Call:
    site: Site
    step: int  # 0-based sampling step of this pass
    steps: int  # sampling steps of this pass
    hw: tuple[int, int]  # the queries' spatial grid (h, w); h * w == probs.shape[2]
    cond_rows: list[int] = field(default_factory=list)
    uncond_rows: list[int] = field(default_factory=list)


class Controller:
    """Sees nothing, changes nothing; subclasses override what they need."""

    def begin(self, steps: int, latent_hw: tuple[int, int]) -> None:
        """A sampling pass of ``steps`` steps on a ``latent_hw`` latent starts."""

    def needs_probs(self, site: Site, step: int, queries: int) -> bool:
        """Whether this module, at this step, with ``queries`` query positions, needs explicit probabilities."""
        return False

    def probs(self, call: Call, probs):
        return probs

    def step_end(self, step: int, latents):
        """After each sampling step: may return changed latents (Prompt-to-Prompt's local blend)."""
        return latents

    def end(self) -> None:
        """The pass ended (also after an error or an interrupt)."""


def query_grid(latent_hw: tuple[int, int], n_queries: int) -> tuple[int, int]:
    """The (h, w) grid of a layer's queries, from the latent size and the query count."""
    lh, lw = latent_hw
    factor = 1
    while (lh // factor) * (lw // factor) > n_queries and factor < 64:
        factor *= 2
    h, w = -(-lh // factor), -(-lw // factor)  # the UNet's downsamplers round up
    if h * w != n_queries:
        raise ValueError(f"cannot place {n_queries} queries on a {lh}x{lw} latent")
    return h, w


def place_of(name: str) -> str:
    if "down" in name or "input_blocks" in name:
        return "down"
    if "mid" in name or "middle_block" in name:
        return "mid"
    return "up"


class Chain(Controller):
    """Several controllers on one pass (e.g. DAAM recording a P2P edit)."""

    def __init__(self, *controllers: Controller):
        self.controllers = [c for c in controllers if c is not None]

    def begin(self, steps, latent_hw):
        for c in self.controllers:
            c.begin(steps, latent_hw)

    def needs_probs(self, site, step, queries):
        return any(c.needs_probs(site, step, queries) for c in self.controllers)

    def probs(self, call, probs):
        for c in self.controllers:
            if c.needs_probs(call.site, call.step, call.hw[0] * call.hw[1]):
                probs = c.probs(call, probs)
        return probs

    def step_end(self, step, latents):
        for c in self.controllers:
            latents = c.step_end(step, latents)
        return latents

    def end(self):
        for c in self.controllers:
            c.end()


def optional(controller: Optional[Controller]) -> Controller:
    return controller if controller is not None else Controller()


class OnDevice:
    """Small CPU tensors (index lists, mapping matrices) copied to the device once, not at every attention
    call: a copy from host memory waits for the GPU to catch up, which stalls a launch-bound generation at
    every call that makes one."""

    def __init__(self):
        self._cache: dict[tuple, object] = {}

    def get(self, name, value, like):
        """``value`` (a tensor, or a list of indices) on ``like``'s device (tensors also in its dtype)."""
        import torch

        index = not torch.is_tensor(value)
        key = (name, like.device, None if index else like.dtype)
        found = self._cache.get(key)
        if found is None:
            found = (torch.tensor(value, dtype=torch.long) if index else value).to(
                like.device, None if index else like.dtype)
            self._cache[key] = found
        return found
