"""Explain and Prompt-to-Prompt in the WebUI hosts on SDXL: the whole SGM attention layout found and patched (A1111:
per-instance forwards; Forge: attention-replace keys), reading and mixing right at every SDXL head count and
context length, and word positions from the WebUI's own SDXL text encoders (A1111: the conditioner's first
embedder; Forge: ``text_processing_engine_l``) equal to what the same prompt gives on SD1.5, for a table of prompts.
"""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

from lib_profile.attention.control import Controller, Mix, Site
from lib_profile.hosts.webui import attention as wa
from lib_profile.hosts.webui.flavours import detect_flavour
from lib_profile.hosts.webui.forge_attention import block_key, make_patch, patched_clone
from lib_profile.hosts.webui.host import WebUIHost

try:
    from standins import ldm
    from standins import webui as standin
except ImportError:
    from tests.standins import ldm
    from tests.standins import webui as standin

#: SDXL's UNet (SGM names): the transformer depth of each block holding one, and its width (heads of 64 channels)
SDXL_BLOCKS = {("input", 4): (2, 640), ("input", 5): (2, 640), ("input", 7): (10, 1280), ("input", 8): (10, 1280),
               ("middle", 0): (10, 1280), ("output", 0): (10, 1280), ("output", 1): (10, 1280),
               ("output", 2): (10, 1280), ("output", 3): (2, 640), ("output", 4): (2, 640), ("output", 5): (2, 640)}
HEAD_DIM, CONTEXT = 2, 12  # tiny: SDXL's 64 channels a head and 2048 context channels (768 + 1280), scaled down


class CrossAttention(torch.nn.Module):
    """sgm's CrossAttention surface (``heads``, ``scale``, ``to_q/k/v``, ``to_out``); A1111 sets ``forward`` on the
    class to its optimised one."""

    def __init__(self, heads, context_dim=None):
        super().__init__()
        dim = heads * HEAD_DIM
        self.heads, self.scale = heads, HEAD_DIM ** -0.5
        self.to_q = torch.nn.Linear(dim, dim, bias=False)
        self.to_k = torch.nn.Linear(context_dim or dim, dim, bias=False)
        self.to_v = torch.nn.Linear(context_dim or dim, dim, bias=False)
        self.to_out = torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.Dropout(0.0))

    def forward(self, x, context=None, mask=None, additional_tokens=None, n_times_crossframe_attn_in_self=0):
        ctx = x if context is None else context
        b, n, inner = x.shape[0], x.shape[1], self.to_q.out_features
        q, k, v = (t.reshape(b, -1, self.heads, HEAD_DIM).transpose(1, 2)
                   for t in (self.to_q(x), self.to_k(ctx), self.to_v(ctx)))
        return self.to_out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, inner))


def sdxl_unet() -> torch.nn.Module:
    """SDXL's attention layout with sgm's module names (``input_blocks.7.1.transformer_blocks.9.attn2``)."""
    unet = torch.nn.Module()
    unet.input_blocks = torch.nn.ModuleList([torch.nn.Module() for _ in range(9)])
    unet.middle_block = torch.nn.Module()
    unet.output_blocks = torch.nn.ModuleList([torch.nn.Module() for _ in range(9)])
    for (part, number), (depth, width) in SDXL_BLOCKS.items():
        holder = unet.middle_block if part == "middle" else getattr(unet, f"{part}_blocks")[number]
        transformer = torch.nn.Module()
        transformer.transformer_blocks = torch.nn.ModuleList()
        for _ in range(depth):
            block = torch.nn.Module()
            block.attn1, block.attn2 = CrossAttention(width // 64), CrossAttention(width // 64, CONTEXT)
            transformer.transformer_blocks.append(block)
        holder.add_module("1", transformer)
    return unet.eval()


class Patcher:
    """Forge's UnetPatcher surface for attention replace patches: ``clone``, ``set_model_attn{1,2}_replace``."""

    def __init__(self, model):
        self.model, self.patches = model, {}

    def clone(self):
        return Patcher(self.model)

    def set_model_attn1_replace(self, patch, block, number, index):
        self.patches[("attn1", block, number, index)] = patch

    def set_model_attn2_replace(self, patch, block, number, index):
        self.patches[("attn2", block, number, index)] = patch


def expected_keys() -> set:
    return {(f"attn{n}", part, number, i) for (part, number), (depth, _w) in SDXL_BLOCKS.items()
            for i in range(depth) for n in (1, 2)}


def test_the_whole_sdxl_layout_is_patched_in_both_webuis():
    """All 140 attention modules (70 self, 70 cross: 24 down, 10 mid, 36 up), in forward order, each with its own
    head count; Forge gets a replace patch under each key its UNet looks up, ``(block, number, transformer index)``."""
    unet = sdxl_unet()
    found = wa.crossattention_modules(unet)
    assert len(found) == 140 and [n.endswith("attn1") for n, _m in found[:2]] == [True, False]
    state = wa.StepState(Controller(), (32, 32))
    with wa.patched_modules(unet, state):
        assert all("forward" in m.__dict__ for _n, m in found)
        cross = [n for n, _m in found if n.endswith("attn2")]
        places = [wa.place_of(n) for n in cross]
        assert (places.count("down"), places.count("mid"), places.count("up")) == (24, 10, 36)
    assert not any("forward" in m.__dict__ for _n, m in found)

    patcher = Patcher(types.SimpleNamespace(diffusion_model=unet))
    assert set(patched_clone(patcher, state).patches) == expected_keys() and patcher.patches == {}
    assert {block_key(n)[:3] for n, _m in found} == {k[1:] for k in expected_keys()}


def as_sdxl(model):
    """The computing stand-in with SDXL's flag and text surfaces (:func:`sd_model`): the WebUI conditions the prompt
    itself, so only what our host reads changes."""
    text = sd_model("forge" if hasattr(model, "forge_objects") else "a1111", sdxl=True)
    model.is_sdxl = True
    if hasattr(model, "forge_objects"):
        model.text_processing_engine_l, model.text_processing_engine_g = (text.text_processing_engine_l,
                                                                          text.text_processing_engine_g)
        del model.text_processing_engine
    else:
        model.cond_stage_model = text.cond_stage_model
    return model


@pytest.mark.parametrize("flavour", ["a1111", "forge"])
def test_a_generation_under_attention_control_runs_on_sdxl(flavour, tmp_path):
    """Explain's and edit's passes are no longer refused on SDXL: the host patches the model and runs the WebUI's
    processing (which the stand-in fakes; the patches themselves are tested above and below)."""
    from lib_profile.hosts.base import RunControl, Txt2ImgRequest

    with standin.installed(tmp_path / "webui", flavour=flavour) as modules:
        as_sdxl(ldm.install(flavour))
        host = WebUIHost(detect_flavour())
        assert host.model_family == "SDXL" and host.attention_control and host.photo_inversion
        res = host.txt2img(Txt2ImgRequest(prompt="a", width=64, height=64, steps=1), RunControl(attention=Reader(False)))
        assert len(res.images) == 1 and len(modules.processing.calls) == 1
        assert not modules.script_callbacks.callbacks["cfg_denoiser"]


@pytest.mark.parametrize("flavour", ["a1111", "forge"])
def test_the_service_takes_explain_and_edit_jobs_on_sdxl(flavour, tmp_path):
    from lib_profile.service import Studio

    with standin.installed(tmp_path / "webui", flavour=flavour):
        as_sdxl(ldm.install(flavour))
        studio = Studio(WebUIHost(detect_flavour()), tmp_path / "data", lora_root=tmp_path / "loras",
                        outputs_root=tmp_path / "out")
        try:
            studio.create_identity("Anna")
            explain = studio.explain("anna", ["photo"], prompt="a photo of a woman")
            edit = studio.edit("anna", target="a photo of a man", prompt="a photo of a woman", mode="refine")
            assert {j["id"] for j in studio.jobs.list()} >= {explain["id"], edit["id"]}
        finally:
            studio.close()


class Reader(Controller):
    """Reads every cross-attention layer; the edit row (1) takes row 0's attention with its own values (a word
    swap with the identity map, P2P's replace edit at its simplest)."""

    def __init__(self, mix: bool):
        self.seen, self.mix = [], mix

    def needs_probs(self, site, step, queries):
        return site.cross

    def probs(self, call, probs):
        self.seen.append((call.cond_rows, probs.detach().clone()))

    def changes(self, site, step, queries):
        return self.mix and site.cross

    def mixes(self, call, like):
        return [Mix(row=r, terms=[(call.cond_rows[0], None)]) for r in call.cond_rows[1:]]


def oracle(module, x, ctx, mix: bool):
    """The module's attention probabilities and output, computed directly (softmax(q k^T / sqrt(d)) v)."""
    h = module.heads
    q, k, v = (t.reshape(t.shape[0], -1, h, HEAD_DIM).transpose(1, 2)
               for t in (module.to_q(x), module.to_k(ctx), module.to_v(ctx)))
    probs = torch.softmax(q @ k.transpose(-1, -2) * HEAD_DIM ** -0.5, dim=-1)
    if mix:
        probs = probs[[0, 0]]
    out = (probs @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
    return probs, module.to_out(out)


@pytest.mark.parametrize("flavour", ["a1111", "forge"])
@pytest.mark.parametrize("width", [640, 1280], ids=["10-heads", "20-heads"])
@pytest.mark.parametrize("chunks", [1, 2], ids=["77-tokens", "154-tokens"])
@pytest.mark.parametrize("mix", [False, True], ids=["explain", "edit"])
@torch.no_grad()
def test_reading_and_mixing_are_exact_at_every_sdxl_head_count_and_prompt_length(flavour, width, chunks, mix):
    torch.manual_seed(width + chunks)
    module = CrossAttention(width // 64, CONTEXT).eval()
    x, ctx = torch.randn(2, 16, module.to_q.in_features), torch.randn(2, 77 * chunks, CONTEXT)
    site = Site(0, "input_blocks.7.1.transformer_blocks.3.attn2", "down", True, module.heads)
    reader = Reader(mix)
    state = wa.StepState(reader, (4, 4), images=2)
    if flavour == "a1111":
        state.next_unet_call(2)
        module.forward = types.MethodType(wa._controlled_forward(site, state), module)
        out = module(x, context=ctx)
    else:
        q, k, v = module.to_q(x), module.to_k(ctx), module.to_v(ctx)
        out = module.to_out(make_patch(site, state)(q, k, v, {"n_heads": module.heads, "cond_or_uncond": [0]}))
    probs, expected = oracle(module, x, ctx, mix)
    (rows, seen), = reader.seen
    assert rows == [0, 1] and seen.shape == (2, module.heads, 16, 77 * chunks)
    assert torch.allclose(seen, oracle(module, x, ctx, False)[0], atol=1e-5)
    assert torch.allclose(out, expected, atol=1e-5)


# ---------------------------------------------------------------- word positions from the WebUI's SDXL encoders

class Encoder:
    """A WebUI text encoder's ``tokenize_line``: 75-token chunks of CLIP BPE ids between BOS and EOS, padded with
    ``pad`` (CLIP ViT-L pads with EOS, OpenCLIP ViT-bigG with 0 in both WebUIs)."""

    def __init__(self, pad=None):
        from lib_profile.attention.explain import tokenizer

        self.tok = tokenizer()
        self.pad = self.tok.eos_token_id if pad is None else pad

    def tokenize_line(self, text):
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        chunks = [ids[i:i + 75] for i in range(0, max(len(ids), 1), 75)]
        bos, eos = self.tok.bos_token_id, self.tok.eos_token_id
        return [types.SimpleNamespace(tokens=[bos, *c, eos, *[self.pad] * (75 - len(c))]) for c in chunks], len(ids)


def sd_model(flavour: str, sdxl: bool):
    """``shared.sd_model``'s text side as each WebUI holds it: A1111's SDXL ``cond_stage_model`` is sgm's
    GeneralConditioner (no ``tokenize_line`` of its own; its ``embedders`` wrapped by A1111's hijack), Forge's SDXL
    engine has ``text_processing_engine_l`` and ``_g`` and no ``text_processing_engine``."""
    if not sdxl:
        encoder = Encoder()
        return types.SimpleNamespace(is_sdxl=False, cond_stage_model=encoder, text_processing_engine=encoder)
    if flavour == "a1111":
        conditioner = types.SimpleNamespace(embedders=[Encoder(), Encoder(pad=0)])
        return types.SimpleNamespace(is_sdxl=True, cond_stage_model=conditioner)
    return types.SimpleNamespace(is_sdxl=True, text_processing_engine_l=Encoder(), text_processing_engine_g=Encoder(0))


PROMPTS = [
    "a photo of alice",
    "photo of alice, red scarf <lora:alice-1:0.9>",
    ", ".join(["studio portrait of alice in a red wool scarf"] * 12),  # 3 chunks
    " ".join(["word"] * 75), " ".join(["word"] * 76),  # one chunk exactly, one token past it
    "портрет алисы, красный шарф",  # non-Latin: byte-level BPE pieces
    "a high-contrast, black-and-white headshot",  # parts of words
]


@pytest.mark.parametrize("flavour", ["a1111", "forge"])
@pytest.mark.parametrize("prompt", PROMPTS, ids=range(len(PROMPTS)))
def test_word_positions_on_sdxl_are_those_the_webui_encodes(flavour, prompt, tmp_path):
    from lib_profile.attention.daam import TokenMap
    from lib_profile.attention.explain import tokenizer

    with standin.installed(tmp_path / "webui", flavour=flavour) as modules:
        host = WebUIHost(detect_flavour())
        modules.shared.sd_model = sd_model(flavour, sdxl=False)
        sd15 = host.token_chunks(prompt)
        sd15_map = TokenMap.for_host(host, tokenizer(), prompt.split("<")[0])
        modules.shared.sd_model = sd_model(flavour, sdxl=True)
        chunks = host.token_chunks(prompt)
        assert chunks == sd15 and all(len(c) == 77 for c in chunks)
        xl_map = TokenMap.for_host(host, tokenizer(), prompt.split("<")[0])
        assert xl_map.chunks == sd15_map.chunks and len(xl_map.words()) == len(sd15_map.words()) > 0
        for word in xl_map.words():
            assert xl_map.positions(tokenizer(), word) == sd15_map.positions(tokenizer(), word)
