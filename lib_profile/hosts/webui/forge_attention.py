"""Attention control inside Forge: attention-replace patches on a clone of Forge's UNet patcher.

Forge rebuilds ``p.sd_model.forge_objects`` before every sampling pass, so patches are applied in a
``process_before_every_sampling`` hook (docs/webui-hosts.md, "Attention in Forge"): our own always-on script object, put into
the filtered runner for this one call. Each transformer block's attn1/attn2 gets a replace patch
``patch(q, k, v, extra_options)`` (projected q, k, v; ``extra_options["n_heads"]``, ``cond_or_uncond``)
that computes the fused output and lets the controller read and change it. The sampler step comes from
``on_cfg_denoiser``, which Forge calls once per model evaluation too (``attention.StepState``).
"""

from __future__ import annotations

import contextlib
import re
from typing import Iterator, Optional

from lib_profile.attention.control import (Call, Controller, Site, limited_sdpa, mixed_attention, place_of,
                                           query_grid, read_probs)
from lib_profile.hosts.webui.attention import StepState, step_hooks

_BLOCK = re.compile(r"(input_blocks|middle_block|output_blocks)\.(\d+)(?:\.\d+)?\.transformer_blocks\.(\d+)\.attn([12])$")


def block_key(name: str) -> Optional[tuple[str, int, int, bool]]:
    """``"input_blocks.4.1.transformer_blocks.0.attn2"`` -> ``("input", 4, 0, True)`` (Forge's patch key)."""
    match = _BLOCK.search(name)
    if match is None:
        return None
    part, number, index, which = match.groups()
    block = {"input_blocks": "input", "middle_block": "middle", "output_blocks": "output"}[part]
    return block, 0 if block == "middle" else int(number), int(index), which == "2"


def _rows(extra_options: dict, batch: int) -> tuple[list[int], list[int]]:
    order = list(extra_options.get("cond_or_uncond") or [0])
    chunk = max(1, batch // len(order))
    cond = [i * chunk + j for i, c in enumerate(order) if c == 0 for j in range(chunk)]
    uncond = [i * chunk + j for i, c in enumerate(order) if c != 0 for j in range(chunk)]
    return cond, uncond


def make_patch(site: Site, state: StepState):
    def patch(q, k, v, extra_options):
        heads = int(extra_options["n_heads"])
        batch, n, inner = q.shape
        d = inner // heads
        qh, kh, vh = (t.reshape(t.shape[0], -1, heads, d).transpose(1, 2) for t in (q, k, v))
        controller, step = state.controller, state.step
        cond, uncond = _rows(extra_options, batch)
        limits = controller.key_limits(cond, uncond, kh.shape[2]) if site.cross else None
        out = limited_sdpa(qh, kh, vh, limits)
        read, change = controller.needs_probs(site, step, n), controller.changes(site, step, n)
        if read or change:
            call = Call(site, step, state.steps, query_grid(state.latent_hw, n), cond, uncond, kh.shape[2],
                        state.evaluation, limits)
            if read:
                read_probs(controller, call, qh, kh, d ** -0.5, upcast=True)
            if change:
                out = mixed_attention(controller, call, qh, kh, vh, out)
        return out.transpose(1, 2).reshape(batch, n, inner)

    return patch


@contextlib.contextmanager
def controlled(controller: Controller, latent_hw: tuple[int, int], script_callbacks, script_base) -> Iterator[list]:
    """Yields the script object to put into the processing's runner; everything is undone on exit."""
    state = StepState(controller, latent_hw)

    class ProfileStudioAttention(script_base):
        filename = "profile_studio_attention.py"

        def title(self):
            return "Profile Studio attention"

        def show(self, is_img2img):
            return False

        def process_before_every_sampling(self, p, *args, **kwargs):  # Forge: may run twice per pass; idempotent
            p.sd_model.forge_objects.unet = patched_clone(p.sd_model.forge_objects.unet, state)

    with step_hooks(state, script_callbacks):
        yield [ProfileStudioAttention()]


def patched_clone(unet, state: StepState):
    """A clone of Forge's UNet patcher ``unet`` with an attention-replace patch, driven by ``state``, on each
    transformer block's attn1/attn2; ``unet`` itself (and its model) is left as it is."""
    unet = unet.clone()
    index = 0
    for name, module in unet.model.diffusion_model.named_modules():
        key = block_key(name)
        if key is None:
            continue
        block, number, transformer, cross = key
        site = Site(index, name, place_of(name), cross, int(getattr(module, "heads", 0)))
        index += 1
        setter = unet.set_model_attn2_replace if cross else unet.set_model_attn1_replace
        setter(make_patch(site, state), block, number, transformer)
    return unet
