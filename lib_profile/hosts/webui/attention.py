"""Attention control inside A1111: a per-instance ``forward`` on each of the UNet's CrossAttention modules.

A1111 replaces ``CrossAttention.forward`` at class level with its chosen optimisation (sdp, xformers,
Doggettx...) and re-applies it on model load (docs/webui-hosts.md, "Attention in A1111"). We never touch the class:
for one job each module instance gets its own ``forward``, which calls the class's (optimised) one unless the
controller changes that layer's attention at that step (then the module computes q, k, v itself and the change
on PyTorch's fused attention); where the controller only reads, the class's output stays and the probabilities
are computed for the prompt rows beside it. The instance attributes are deleted afterwards, so nothing is left
behind. The sampling step comes from the WebUI's ``on_cfg_denoiser`` callback; A1111 batches conds first, then
unconds.
"""

from __future__ import annotations

import contextlib
import types
from typing import Iterator

from lib_profile.attention.clock import Tick, pattern_of, tick
from lib_profile.attention.control import (Call, Controller, Site, batch_rows, limited_sdpa, mixed_attention,
                                           place_of, query_grid, read_probs)


class StepState:
    """The pass as the WebUI reports it, on one step clock (``attention.clock``): ``on_cfg_denoiser`` comes once per
    model evaluation (the WebUI's ``CFGDenoiser.forward``), whose ``denoiser.step`` counts the evaluations and whose
    sampler's config says how many a step makes (``second_order``). The WebUI's own ``sampling_step`` is not the
    step: the sampler's callback sets it after a step's first evaluation, so it lags one step behind."""

    def __init__(self, controller: Controller, latent_hw: tuple[int, int], images: int = 1):
        self.controller = controller
        self.latent_hw = latent_hw
        self.images = images
        self.step = 0
        self.steps = 1
        self.evaluation = 0  # which model evaluation of the step
        self.evaluations = -1  # model evaluations of this pass so far, minus one
        self.last = True  # this evaluation is its step's last
        self.started = False
        self.rows_seen = 0  # batch rows of this evaluation run so far (A1111 may run cond and uncond apart)
        self.call_start = 0

    def evaluate(self, params) -> bool:
        """Follow one ``on_cfg_denoiser``; True when it starts a new sampling pass (a hires fix pass)."""
        steps = int(params.total_sampling_steps)
        x = getattr(params, "x", None)
        latent_hw = tuple(x.shape[-2:]) if x is not None and getattr(x, "ndim", 0) == 4 else self.latent_hw
        denoiser = getattr(params, "denoiser", None)
        counted = getattr(denoiser, "step", None)
        config = getattr(getattr(denoiser, "sampler", None), "config", None)
        options = getattr(config, "options", None) or {}
        if isinstance(counted, int):  # (samplers with no fixed clock, e.g. Restart, end in their last step;
            evaluation = counted     # an edit refuses them before it starts: attention.clock.check_supported)
            now = tick(evaluation, steps, pattern_of(getattr(config, "name", ""), bool(options.get("second_order"))))
            went_back = evaluation <= self.evaluations
        else:  # no denoiser in the callback's parameters: the WebUI's step, one evaluation each
            evaluation = int(params.sampling_step)
            now = Tick(min(evaluation, steps - 1), 0, True)
            went_back = evaluation < self.evaluations
        new_pass = self.started and (went_back or steps != self.steps or latent_hw != self.latent_hw)
        self.evaluations = evaluation
        self.step, self.evaluation, self.last = now.step, now.evaluation, now.last
        self.steps, self.latent_hw = steps, latent_hw
        self.rows_seen = self.call_start = 0
        return new_pass

    def next_unet_call(self, batch: int) -> None:
        self.call_start, self.rows_seen = self.rows_seen, self.rows_seen + batch

    def rows(self, batch: int) -> tuple[list[int], list[int]]:
        """A1111 batches [conds..., unconds...]; when the prompt and the negative prompt have different lengths
        (or batch_cond_uncond is off) it runs the conds first, then the unconds, in separate calls: the rows of
        this evaluation run before this call tell which are which."""
        rows = range(self.call_start, self.call_start + batch)
        return [r - self.call_start for r in rows if r < self.images], \
            [r - self.call_start for r in rows if r >= self.images]


def crossattention_modules(diffusion_model) -> list[tuple[str, object]]:
    """The UNet's attention modules (ldm ``CrossAttention`` or anything shaped like it), in forward order."""
    out = []
    for name, module in diffusion_model.named_modules():
        if name.endswith(("attn1", "attn2")) and all(hasattr(module, a) for a in ("to_q", "to_k", "to_v", "to_out")):
            out.append((name, module))
    return out


def _controlled_forward(site: Site, state: StepState):
    def forward(self, x, context=None, mask=None, **kwargs):
        controller, n, step = state.controller, x.shape[1], state.step
        read, change = controller.needs_probs(site, step, n), controller.changes(site, step, n)
        ctx = x if context is None else context
        heads, batch = self.heads, x.shape[0]
        cond, uncond = state.rows(batch)
        limits = controller.key_limits(cond, uncond, ctx.shape[1]) if site.cross else None
        if not change and not limits:  # the WebUI's own (optimised) attention makes the output
            out = type(self).forward(self, x, context=context, mask=mask, **kwargs)
            if not read:
                return out

        def split(t):
            return t.reshape(t.shape[0], -1, heads, t.shape[-1] // heads).transpose(1, 2)

        call = Call(site, step, state.steps, query_grid(state.latent_hw, n), cond, uncond, ctx.shape[1],
                    state.evaluation, limits)
        if not change and not limits:  # only read: project the prompt rows beside it
            def projected(rows):
                return split(self.to_q(batch_rows(x, rows))), split(self.to_k(batch_rows(ctx, rows)))

            read_probs(controller, call, projected, None, _scale(self), upcast=True)  # upcast, as opts.upcast_attn
            return out
        q, k, v = split(self.to_q(x)), split(self.to_k(ctx)), split(self.to_v(ctx))
        if read:
            read_probs(controller, call, q, k, _scale(self), upcast=True)
        out = limited_sdpa(q, k, v, limits)
        if change:
            out = mixed_attention(controller, call, q, k, v, out, _scale(self))
        return self.to_out(out.transpose(1, 2).reshape(batch, n, -1))

    return forward


def _scale(module) -> float:
    return getattr(module, "scale", None) or (module.to_q.out_features // module.heads) ** -0.5


@contextlib.contextmanager
def controlled(diffusion_model, controller: Controller, latent_hw: tuple[int, int], images: int,
               script_callbacks) -> Iterator[list]:
    """Patch every attention module of ``diffusion_model`` for the duration of one processing call."""
    state = StepState(controller, latent_hw, images)
    with patched_modules(diffusion_model, state):
        handle = diffusion_model.register_forward_pre_hook(
            lambda module, args: state.next_unet_call(int(args[0].shape[0])))
        try:
            with step_hooks(state, script_callbacks):
                yield []  # A1111 needs no script in the runner: the modules themselves are patched
        finally:
            handle.remove()


@contextlib.contextmanager
def patched_modules(diffusion_model, state: StepState) -> Iterator[None]:
    """Each attention module of ``diffusion_model`` gets its own ``forward`` driven by ``state`` (its step, steps,
    latent size and ``rows(batch)``); the instance attributes are deleted on exit."""
    patched = []
    try:
        for index, (name, module) in enumerate(crossattention_modules(diffusion_model)):
            site = Site(index, name, place_of(name), name.endswith("attn2"), int(module.heads))
            module.forward = types.MethodType(_controlled_forward(site, state), module)
            patched.append(module)
        yield
    finally:
        for module in patched:
            if "forward" in module.__dict__:
                del module.forward


@contextlib.contextmanager
def step_hooks(state: StepState, script_callbacks) -> Iterator[StepState]:
    """Follow the sampler step and pass (``on_cfg_denoiser``; a hires fix pass begins the controller again at
    its own size), give the controller the denoised prediction after each model evaluation (``on_cfg_after_cfg``:
    Prompt-to-Prompt's local blend; the WebUI's callbacks offer no latents between steps, so every evaluation's
    prediction is blended, which keeps the edit's latents equal to the source's outside the mask), and end the
    controller after each pass."""
    controller = state.controller

    def on_cfg_denoiser(params) -> None:
        new_pass = state.evaluate(params)
        if new_pass:
            controller.end()
        if not state.started or new_pass:
            state.started = True
            controller.begin(state.steps, state.latent_hw)

    def on_cfg_after_cfg(params) -> None:
        params.x = controller.step_end(state.step, params.x)

    script_callbacks.on_cfg_denoiser(on_cfg_denoiser, name="profile-studio-attention")
    script_callbacks.on_cfg_after_cfg(on_cfg_after_cfg, name="profile-studio-blend")
    try:
        yield state
    finally:
        script_callbacks.remove_callbacks_for_function(on_cfg_denoiser)
        script_callbacks.remove_callbacks_for_function(on_cfg_after_cfg)
        if state.started:
            controller.end()
