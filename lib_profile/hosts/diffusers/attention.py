"""Attention control on the diffusers host: our own attention processor on every UNet attention module.

The same processor serves every family the host runs: SD1.5 (16 transformer blocks at 3 levels, 8 heads, a 768-wide
context) and SDXL (70 transformer blocks at 2 levels - latent/2 and latent/4 - heads 64 features wide, a 2048-wide
context: CLIP ViT-L's 768 and OpenCLIP bigG's 1280 features of the same token, concatenated). The controller sees
only what is common to both: a module's place, whether it attends to the prompt, its heads, its query grid (from
the latent's size and the query count, ``control.query_grid``) and ``77 * chunks`` keys. SDXL's pooled text and size
numbers go to the UNet's added embedding, not through attention, so no processor sees them (P2P: docs/attention.md).

Installed for one call and removed afterwards (the UNet's previous processors come back, so a plain
generation after an explained or edited one is bit for bit the same as before). Modules the controller
reads beside PyTorch's fused ``scaled_dot_product_attention``, and changes (Prompt-to-Prompt) through it.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from lib_profile.attention.clock import tick
from lib_profile.attention.control import (Call, Controller, Site, limited_sdpa, mixed_attention, place_of,
                                           query_grid, read_probs)


class _State:
    def __init__(self, controller: Controller, steps: int, images: int, pattern: str = "one"):
        self.controller = controller
        self.steps = steps
        self.images = images
        self.pattern = pattern
        self.evaluations = 0  # model evaluations so far (one UNet call each: diffusers batches cond and uncond)
        self.step = -1
        self.evaluation = 0
        self.latent_hw = (0, 0)

    def rows(self, batch: int) -> tuple[list[int], list[int]]:
        """diffusers batches [negative..., prompt...] under classifier-free guidance."""
        if batch == 2 * self.images:
            return list(range(self.images, batch)), list(range(self.images))
        return list(range(batch)), []


class ControlledAttnProcessor:
    def __init__(self, site: Site, state: _State):
        self.site = site
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        state = self.state
        batch, n, _ = hidden_states.shape
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross is not None:
            context = attn.norm_cross(context)
        heads = attn.heads
        q = attn.to_q(hidden_states)
        k = attn.to_k(context)
        v = attn.to_v(context)
        d = q.shape[-1] // heads
        q, k, v = (t.view(batch, -1, heads, d).transpose(1, 2) for t in (q, k, v))
        controller, step = state.controller, state.step
        cond, uncond = state.rows(batch)
        limits = controller.key_limits(cond, uncond, k.shape[2]) if self.site.cross else None
        out = limited_sdpa(q, k, v, limits)
        read, change = controller.needs_probs(self.site, step, n), controller.changes(self.site, step, n)
        if read or change:
            call = Call(self.site, step, state.steps, query_grid(state.latent_hw, n), cond, uncond, k.shape[2],
                        state.evaluation, limits)
            if read:
                read_probs(controller, call, q, k, attn.scale)
            if change:
                out = mixed_attention(controller, call, q, k, v, out, attn.scale)
        out = out.transpose(1, 2).reshape(batch, -1, heads * d).to(q.dtype)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if attn.residual_connection:
            raise NotImplementedError("residual attention is not part of SD1.5 or SDXL")
        return out / attn.rescale_output_factor


def sites(unet) -> list[tuple[str, Site]]:
    from diffusers.models.attention_processor import Attention

    out = []
    for name, module in unet.named_modules():
        if isinstance(module, Attention):
            out.append((name, Site(len(out), name, place_of(name), name.endswith("attn2"), module.heads)))
    return out


@contextlib.contextmanager
def controlled(unet, controller: Controller, steps: int, images: int, pattern: str = "one") -> Iterator[None]:
    """Our processors on ``unet`` for the duration. Each UNet forward call is one model evaluation; the sampler
    step comes from the sampler's evaluation ``pattern`` (``attention.clock``)."""
    state = _State(controller, steps, images, pattern)
    saved = unet.attn_processors
    found = sites(unet)
    processors = {f"{name}.processor": ControlledAttnProcessor(site, state) for name, site in found}

    def before_forward(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        now = tick(state.evaluations, steps, pattern)
        state.evaluations += 1
        state.step, state.evaluation = now.step, now.evaluation
        state.latent_hw = tuple(sample.shape[-2:])
        if state.evaluations == 1:
            controller.begin(steps, state.latent_hw)

    unet.set_attn_processor(processors)
    handle = unet.register_forward_pre_hook(before_forward, with_kwargs=True)
    try:
        yield state
    finally:
        handle.remove()
        unet.set_attn_processor(saved)
        if state.step >= 0:
            controller.end()
