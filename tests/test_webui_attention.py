"""A1111 attention plumbing (per-instance forward patches) against an ldm-shaped stand-in UNet."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

from lib_profile.attention.control import Controller, Mix
from lib_profile.hosts.webui import attention as wa


class CrossAttention(torch.nn.Module):
    """ldm's CrossAttention surface (heads, scale, to_q/k/v, to_out); A1111 sets ``forward`` on the class."""

    calls = 0

    def __init__(self, dim, context_dim=None, heads=2):
        super().__init__()
        context_dim = context_dim or dim
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.to_q = torch.nn.Linear(dim, dim, bias=False)
        self.to_k = torch.nn.Linear(context_dim, dim, bias=False)
        self.to_v = torch.nn.Linear(context_dim, dim, bias=False)
        self.to_out = torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.Dropout(0.0))

    def forward(self, x, context=None, mask=None, **kwargs):  # the "optimised" class-level path (sdp)
        type(self).calls += 1
        ctx = x if context is None else context
        b, n, inner = x.shape[0], x.shape[1], self.to_q.out_features
        q, k, v = (t.reshape(b, -1, self.heads, inner // self.heads).transpose(1, 2)
                   for t in (self.to_q(x), self.to_k(ctx), self.to_v(ctx)))
        return self.to_out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, inner))


def unet():
    model = torch.nn.Module()
    block = torch.nn.Module()
    block.attn1, block.attn2 = CrossAttention(8), CrossAttention(8, 6)
    model.input_blocks = torch.nn.ModuleList([torch.nn.Module(), torch.nn.Module()])
    model.input_blocks[1].transformer_blocks = torch.nn.ModuleList([block])
    return model.eval()


def callbacks():
    registry = {"cfg_denoiser": [], "cfg_after_cfg": []}
    module = types.SimpleNamespace(registry=registry)
    module.on_cfg_denoiser = lambda fn, name=None: registry["cfg_denoiser"].append(fn)
    module.on_cfg_after_cfg = lambda fn, name=None: registry["cfg_after_cfg"].append(fn)

    def remove(fn):
        for fns in registry.values():
            if fn in fns:
                fns.remove(fn)

    module.remove_callbacks_for_function = remove
    return module


class Recorder(Controller):
    """Reads cross-attention from step 1 on."""

    def __init__(self):
        self.calls, self.began, self.ended = [], None, False

    def begin(self, steps, latent_hw):
        self.began = (steps, latent_hw)

    def needs_probs(self, site, step, queries):
        return site.cross and step >= 1

    def probs(self, call, probs):
        self.calls.append((call.site.name, call.step, call.hw, call.cond_rows, call.uncond_rows, tuple(probs.shape)))

    def end(self):
        self.ended = True


class Mixer(Controller):
    """Changes cross-attention: the second image's prompt row attends with the first's probabilities."""

    def __init__(self, images=2):
        self.images, self.calls = images, []

    def changes(self, site, step, queries):
        return site.cross

    def mixes(self, call, like):
        self.calls.append((call.step, call.cond_rows, call.uncond_rows, call.keys))
        return [Mix(call.cond_rows[1], [(call.cond_rows[0], None)])] if len(call.cond_rows) == 2 else []


def attention(module, x, ctx, rows_qk=None):
    """Reference: the module's attention per row, optionally with another row's queries and keys."""
    b, inner = x.shape[0], module.to_q.out_features
    q, k, v = (t.reshape(b, -1, module.heads, inner // module.heads).transpose(1, 2)
               for t in (module.to_q(x), module.to_k(ctx), module.to_v(ctx)))
    if rows_qk:
        q, k = q[rows_qk], k[rows_qk]
    probs = (q @ k.transpose(-1, -2) * module.scale).softmax(-1)
    return module.to_out((probs @ v).transpose(1, 2).reshape(b, x.shape[1], inner)), probs


def test_patched_modules_read_only_what_is_asked_beside_the_optimised_path():
    model, cb, rec = unet(), callbacks(), Recorder()
    attn1 = model.input_blocks[1].transformer_blocks[0].attn1
    attn2 = model.input_blocks[1].transformer_blocks[0].attn2
    x, ctx = torch.randn(4, 16, 8), torch.randn(4, 5, 6)  # two images: [cond, cond, uncond, uncond]; a 4x4 latent
    reference = attn2(x, context=ctx)
    with wa.controlled(model, rec, (4, 4), 2, cb) as scripts:
        assert scripts == []
        for step in range(3):
            for fn in cb.registry["cfg_denoiser"]:
                fn(types.SimpleNamespace(sampling_step=step, total_sampling_steps=3))
            CrossAttention.calls = 0
            attn1(x)
            out = attn2(x, context=ctx)
            assert CrossAttention.calls == 2  # the class's (optimised) forward made both outputs ...
            assert torch.equal(out, reference)  # ... unchanged
    assert rec.began == (3, (4, 4)) and rec.ended
    assert rec.calls == [("input_blocks.1.transformer_blocks.0.attn2", s, (4, 4), [0, 1], [], (2, 2, 16, 5))
                         for s in (1, 2)]  # the prompt rows alone
    assert "forward" not in attn1.__dict__ and "forward" not in attn2.__dict__
    assert cb.registry == {"cfg_denoiser": [], "cfg_after_cfg": []}


def test_a_reading_controller_gets_the_attention_that_made_the_output():
    model, cb = unet(), callbacks()
    attn2 = model.input_blocks[1].transformer_blocks[0].attn2
    x, ctx = torch.randn(4, 16, 8), torch.randn(4, 5, 6)
    seen = []

    class Keep(Recorder):
        def probs(self, call, probs):
            seen.append(probs.clone())

    with wa.controlled(model, Keep(), (4, 4), 2, cb):
        for fn in cb.registry["cfg_denoiser"]:
            fn(types.SimpleNamespace(sampling_step=1, total_sampling_steps=3))
        attn2(x, context=ctx)
    _out, probs = attention(attn2, x, ctx)
    assert torch.allclose(seen[0], probs[:2], atol=1e-6)


def test_a_changing_controller_mixes_rows_on_the_fused_path():
    model, cb, mixer = unet(), callbacks(), Mixer()
    attn2 = model.input_blocks[1].transformer_blocks[0].attn2
    x, ctx = torch.randn(4, 16, 8), torch.randn(4, 5, 6)
    plain, _p = attention(attn2, x, ctx)
    mixed, _p = attention(attn2, x, ctx, rows_qk=[0, 0, 2, 3])  # row 1 attends with row 0's probabilities
    with wa.controlled(model, mixer, (4, 4), 2, cb):
        for fn in cb.registry["cfg_denoiser"]:
            fn(types.SimpleNamespace(sampling_step=0, total_sampling_steps=3))
        CrossAttention.calls = 0
        out = attn2(x, context=ctx)
        assert CrossAttention.calls == 0
    assert mixer.calls == [(0, [0, 1], [2, 3], 5)]
    assert torch.allclose(out, mixed, atol=1e-5) and not torch.allclose(out[1], plain[1], atol=1e-3)
    assert torch.allclose(out[[0, 2, 3]], plain[[0, 2, 3]], atol=1e-5)


def test_patches_go_away_after_an_error():
    model, cb = unet(), callbacks()
    try:
        with wa.controlled(model, Recorder(), (4, 4), 1, cb):
            raise RuntimeError("sampling failed")
    except RuntimeError:
        pass
    assert all("forward" not in m.__dict__ for _n, m in wa.crossattention_modules(model))
    assert cb.registry == {"cfg_denoiser": [], "cfg_after_cfg": []}


# ------------------------------------------------------------------ Forge: replace patches on a UNet patcher

class UnetPatcher:
    """The parts of Forge's ``UnetPatcher`` used: ``clone`` and ``set_model_attn{1,2}_replace``."""

    def __init__(self, model, patches=None):
        self.model, self.patches = model, dict(patches or {})

    def clone(self):
        return UnetPatcher(self.model, self.patches)

    def set_model_attn1_replace(self, patch, block_name, number, transformer_index=None):
        self.patches[("attn1", block_name, number, transformer_index)] = patch

    def set_model_attn2_replace(self, patch, block_name, number, transformer_index=None):
        self.patches[("attn2", block_name, number, transformer_index)] = patch


def forge_model():
    km = torch.nn.Module()
    km.diffusion_model = torch.nn.Module()
    dm = km.diffusion_model
    dm.input_blocks = torch.nn.ModuleList([torch.nn.Module() for _ in range(5)])
    dm.input_blocks[4].add_module("1", torch.nn.Module())
    getattr(dm.input_blocks[4], "1").transformer_blocks = torch.nn.ModuleList([torch.nn.Module()])
    blk = getattr(dm.input_blocks[4], "1").transformer_blocks[0]
    blk.attn1, blk.attn2 = CrossAttention(8), CrossAttention(8, 6)
    dm.middle_block = torch.nn.ModuleList([torch.nn.Module(), torch.nn.Module()])
    dm.middle_block[1].transformer_blocks = torch.nn.ModuleList([torch.nn.Module()])
    dm.middle_block[1].transformer_blocks[0].attn2 = CrossAttention(8, 6)
    return km


def test_forge_block_keys():
    from lib_profile.hosts.webui.forge_attention import block_key

    assert block_key("input_blocks.4.1.transformer_blocks.0.attn2") == ("input", 4, 0, True)
    assert block_key("middle_block.1.transformer_blocks.0.attn1") == ("middle", 0, 0, False)
    assert block_key("output_blocks.11.1.transformer_blocks.0.attn2") == ("output", 11, 0, True)
    assert block_key("input_blocks.4.1.proj_in") is None


def test_forge_script_patches_a_clone_and_the_patch_computes_attention():
    from lib_profile.hosts.webui.forge_attention import controlled

    class Script:  # modules.scripts.Script stand-in
        pass

    original = UnetPatcher(forge_model())
    p = types.SimpleNamespace(sd_model=types.SimpleNamespace(forge_objects=types.SimpleNamespace(unet=original)))
    cb, rec = callbacks(), Recorder()
    with controlled(rec, (4, 4), cb, Script) as scripts:
        (script,) = scripts
        assert isinstance(script, Script) and script.title() == "Profile Studio attention"
        script.process_before_every_sampling(p)
        script.process_before_every_sampling(p)  # Forge may call it twice per pass
        patched = p.sd_model.forge_objects.unet
        assert patched is not original and original.patches == {}
        assert set(patched.patches) == {("attn1", "input", 4, 0), ("attn2", "input", 4, 0), ("attn2", "middle", 0, 0)}
        for fn in cb.registry["cfg_denoiser"]:
            fn(types.SimpleNamespace(sampling_step=1, total_sampling_steps=4))
        q, k, v = torch.randn(2, 16, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)
        out = patched.patches[("attn2", "input", 4, 0)](q, k, v, {"n_heads": 2, "cond_or_uncond": [1, 0]})
        qh, kh, vh = (x.reshape(2, -1, 2, 4).transpose(1, 2) for x in (q, k, v))
        expected = F.scaled_dot_product_attention(qh, kh, vh).transpose(1, 2).reshape(2, 16, 8)
        assert torch.equal(out, expected)  # read beside the fused path, which stays
    (name, step, hw, cond, uncond, shape) = rec.calls[0]
    assert (step, hw, cond, uncond, shape) == (1, (4, 4), [0], [], (1, 2, 16, 5))  # row 1 (the prompt's) alone
    assert rec.began == (4, (4, 4)) and rec.ended
    assert cb.registry == {"cfg_denoiser": [], "cfg_after_cfg": []}


def test_forge_patch_mixes_the_prompt_rows_forge_names():
    from lib_profile.attention.control import Site
    from lib_profile.hosts.webui.forge_attention import make_patch

    mixer = Mixer()
    state = wa.StepState(mixer, (4, 4), images=2)
    patch = make_patch(Site(0, "input_blocks.4.1.transformer_blocks.0.attn2", "down", True, 2), state)
    q, k, v = torch.randn(4, 16, 8), torch.randn(4, 5, 8), torch.randn(4, 5, 8)
    out = patch(q, k, v, {"n_heads": 2, "cond_or_uncond": [1, 0]})  # [uncond, uncond, cond, cond]
    qh, kh, vh = (x.reshape(4, -1, 2, 4).transpose(1, 2) for x in (q, k, v))
    idx = [0, 1, 2, 2]  # the edit row (3) attends with the source row's (2) queries and keys, its own values
    expected = F.scaled_dot_product_attention(qh[idx], kh[idx], vh).transpose(1, 2).reshape(4, 16, 8)
    assert torch.allclose(out, expected, atol=1e-6)
    assert mixer.calls == [(0, [2, 3], [0, 1], 5)]


class TinyUNet(torch.nn.Module):
    """Calls its one transformer block like a UNet forward (``context`` = the text conditioning)."""

    def __init__(self):
        super().__init__()
        block = torch.nn.Module()
        block.attn1, block.attn2 = CrossAttention(8), CrossAttention(8, 6)
        self.input_blocks = torch.nn.ModuleList([torch.nn.Module(), torch.nn.Module()])
        self.input_blocks[1].transformer_blocks = torch.nn.ModuleList([block])

    def forward(self, x, context):
        block = self.input_blocks[1].transformer_blocks[0]
        return block.attn2(block.attn1(x), context=context)


def test_separate_cond_and_uncond_calls_are_told_apart():
    from lib_profile.attention.control import Chain

    """A1111 runs prompt and negative prompt apart when their lengths differ: conds first, then unconds."""
    model, cb, rec, mixer = TinyUNet(), callbacks(), Recorder(), Mixer()
    x = torch.randn(1, 16, 8)
    with wa.controlled(model, Chain(rec, mixer), (4, 4), 1, cb):
        for step in range(3):
            for fn in cb.registry["cfg_denoiser"]:
                fn(types.SimpleNamespace(sampling_step=step, total_sampling_steps=3))
            model(x, torch.randn(1, 154, 6))  # the prompt: two chunks
            model(x, torch.randn(1, 77, 6))  # the negative prompt: one chunk
    assert mixer.calls == [(s, [0], [], 154) if prompt else (s, [], [0], 77) for s in range(3) for prompt in (1, 0)]
    read = [(step, cond, uncond, shape[-1]) for _n, step, _hw, cond, uncond, shape in rec.calls]
    assert read == [(1, [0], [], 154), (2, [0], [], 154)]  # the negative prompt's calls have nothing to read
    assert not model._forward_pre_hooks


def test_a_hires_fix_pass_begins_the_controller_again_at_its_own_size():
    """A1111/Forge run hires fix inside the same processing call: the step count starts again and the latent
    grows. Each pass begins and ends the controller; DAAM records only the pass asked for."""
    from lib_profile.attention.control import Chain
    from lib_profile.attention.daam import DaamRecorder

    class Passes(Controller):
        def __init__(self):
            self.log = []

        def begin(self, steps, latent_hw):
            self.log.append(("begin", steps, latent_hw))

        def end(self):
            self.log.append(("end",))

    model, cb, passes = unet(), callbacks(), Passes()
    first, hires = DaamRecorder(), DaamRecorder(sampling_pass=1)
    attn2 = model.input_blocks[1].transformer_blocks[0].attn2
    with wa.controlled(model, Chain(passes, first, hires), (4, 4), 1, cb):
        for hw, steps in (((4, 4), 3), ((8, 8), 2)):
            for step in range(steps):
                for fn in cb.registry["cfg_denoiser"]:
                    fn(types.SimpleNamespace(sampling_step=step, total_sampling_steps=steps, x=torch.zeros(2, 4, *hw)))
                attn2(torch.randn(2, hw[0] * hw[1], 8), context=torch.randn(2, 5, 6))
    assert passes.log == [("begin", 3, (4, 4)), ("end",), ("begin", 2, (8, 8)), ("end",)]
    assert [tuple(r.shape) for r in first.raw.values()] == [(2, 16, 5)] and list(first.grids.values()) == [(4, 4)]
    assert [tuple(r.shape) for r in hires.raw.values()] == [(2, 64, 5)] and list(hires.grids.values()) == [(8, 8)]
    assert first.maps().shape[-2:] == (4, 4) and hires.maps().shape[-2:] == (8, 8)


class TauMixer(Mixer):
    """Mixer that changes only the first ``until`` sampler steps (Prompt-to-Prompt's tau), and logs the clock."""

    def __init__(self, until):
        super().__init__()
        self.until, self.clock = until, []

    def changes(self, site, step, queries):
        return site.cross and step < self.until

    def mixes(self, call, like):
        self.clock.append((call.step, call.evaluation, tuple(call.cond_rows), tuple(call.uncond_rows)))
        return super().mixes(call, like)


def denoiser_params(evaluation, steps, sampler="Heun", second_order=True):
    """``CFGDenoiserParams`` as A1111 1.10.1 and Forge pass them: ``sampling_step`` as the WebUI's state has it (set by
    the sampler's callback after a step's first evaluation, so one step behind), ``denoiser.step`` counting the
    model evaluations, the sampler's config with its ``second_order`` option."""
    step = evaluation // 2 if second_order else evaluation
    lagging = max(0, step - 1) if (not second_order or evaluation % 2 == 0) else step
    config = types.SimpleNamespace(name=sampler, options={"second_order": second_order})
    denoiser = types.SimpleNamespace(step=evaluation, sampler=types.SimpleNamespace(config=config))
    return types.SimpleNamespace(sampling_step=lagging, total_sampling_steps=steps, denoiser=denoiser)



@pytest.mark.parametrize("sampler, second_order", [("Heun", True), ("DPM++ SDE", True), ("Euler", False)])
def test_a_second_order_sampler_keeps_one_step_clock_batched_or_not(sampler, second_order):
    """A1111 evaluates a second-order sampler twice a step (2n - 1 in all), and runs cond and uncond in one call or,
    when the prompt and the negative prompt differ in length, apart. Each evaluation of step s is step s (not the
    WebUI's lagging ``sampling_step``, and not an unconditional call), tau holds for the same steps, and the edit
    is the same either way."""
    steps, until = 3, 2
    outs, clocks = {}, {}
    torch.manual_seed(0)
    model = TinyUNet()
    x, cond, uncond = torch.randn(2, 16, 8), torch.randn(2, 5, 6), torch.randn(2, 5, 6)
    for batched in (True, False):
        cb, mixer = callbacks(), TauMixer(until)
        got = []
        with torch.no_grad(), wa.controlled(model, mixer, (4, 4), 2, cb):
            for e in range(2 * steps - 1 if second_order else steps):
                for fn in cb.registry["cfg_denoiser"]:
                    fn(denoiser_params(e, steps, sampler, second_order))
                if batched:  # [conds..., unconds...]
                    got.append(model(torch.cat([x, x]), torch.cat([cond, uncond]))[:2])
                else:
                    got.append(model(x, cond))
                    model(x, uncond)
        outs[batched], clocks[batched] = torch.stack(got), mixer.clock
    per_step = 2 if second_order else 1
    expected = [(e // per_step, e % per_step) for e in range(2 * steps - 1 if second_order else steps)
                if e // per_step < until]
    assert [(s, ev) for s, ev, _c, _u in clocks[True]] == expected
    assert [c for c in clocks[True] if c[2]] == [(s, ev, (0, 1), (2, 3)) for s, ev in expected]
    assert [c for c in clocks[False] if c[2]] == [(s, ev, (0, 1), ()) for s, ev in expected]  # no cond taken as uncond
    assert torch.allclose(outs[True], outs[False], atol=1e-5)


def test_forge_patches_follow_the_same_clock():
    from lib_profile.attention.control import Site
    from lib_profile.hosts.webui.forge_attention import make_patch

    mixer = TauMixer(2)
    state = wa.StepState(mixer, (4, 4), images=2)
    patch = make_patch(Site(0, "input_blocks.4.1.transformer_blocks.0.attn2", "down", True, 2), state)
    q, k, v = torch.randn(4, 16, 8), torch.randn(4, 5, 8), torch.randn(4, 5, 8)
    for e in range(5):
        state.evaluate(denoiser_params(e, 3))
        patch(q, k, v, {"n_heads": 2, "cond_or_uncond": [1, 0]})
    assert [(s, ev) for s, ev, _c, _u in mixer.clock] == [(0, 0), (0, 1), (1, 0), (1, 1)]


class Limits(Controller):
    """The source row (cond row 0) attends to its first 5 keys: its prompt had one chunk fewer than the batch's."""

    def key_limits(self, cond_rows, uncond_rows, keys):
        return {cond_rows[0]: 5} if cond_rows else None


def test_a1111_rows_attend_to_their_own_keys_only():
    model, cb = TinyUNet(), callbacks()
    attn2 = model.input_blocks[1].transformer_blocks[0].attn2
    x, ctx = torch.randn(4, 16, 8), torch.randn(4, 9, 6)
    with torch.no_grad():
        alone, _ = attention(attn2, x[:1], ctx[:1, :5])
        rest, _ = attention(attn2, x[1:], ctx[1:])
        with wa.controlled(model, Limits(), (4, 4), 2, cb):
            for fn in cb.registry["cfg_denoiser"]:
                fn(denoiser_params(0, 3, "Euler", False))
            out = attn2(x, context=ctx)  # one call of [conds..., unconds...]: row 0 is the source's prompt
    assert torch.allclose(out[:1], alone, atol=1e-5) and torch.allclose(out[1:], rest, atol=1e-5)


def test_forge_rows_attend_to_their_own_keys_only():
    from lib_profile.attention.control import Site
    from lib_profile.hosts.webui.forge_attention import make_patch

    state = wa.StepState(Limits(), (4, 4), images=2)
    patch = make_patch(Site(0, "input_blocks.4.1.transformer_blocks.0.attn2", "down", True, 2), state)
    q, k, v = torch.randn(4, 16, 8), torch.randn(4, 9, 8), torch.randn(4, 9, 8)
    out = patch(q, k, v, {"n_heads": 2, "cond_or_uncond": [1, 0]})  # [uncond, uncond, cond, cond]: row 2 limited
    qh, kh, vh = (x.reshape(4, -1, 2, 4).transpose(1, 2) for x in (q, k, v))
    full = F.scaled_dot_product_attention(qh, kh, vh).transpose(1, 2).reshape(4, 16, 8)
    cut = F.scaled_dot_product_attention(qh[2:3], kh[2:3, :, :5], vh[2:3, :, :5]).transpose(1, 2).reshape(1, 16, 8)
    assert torch.allclose(out[[0, 1, 3]], full[[0, 1, 3]], atol=1e-6) and torch.allclose(out[2:3], cut, atol=1e-6)
