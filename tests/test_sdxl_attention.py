"""Explain (DAAM word maps) and edit (Prompt-to-Prompt) on SDXL, on the diffusers host and the tiny SDXL-shaped model
(``tiny-sdxl``): SDXL's attention layout (transformer blocks at latent/2 and latent/4, heads 64 features wide, a
context of both encoders' features per token), word positions shared by both text encoders, the edited image's
pooled text vector, prompts of several 75-token chunks, every sampler, and the studio's API as a user meets it.

The oracles: a reading controller leaves the image bit for bit a plain generation's; a word swap to the same words
with the cross-attention replaced at every step (tau 1) gives the source back; tau 0 gives the plain target; a
re-weighting by 1 gives the source back."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from lib_profile.attention.control import Controller
from lib_profile.attention.daam import TokenMap
from lib_profile.attention.explain import explain, tokenizer
from lib_profile.attention.p2p import Edit, run_edit
from lib_profile.hosts.base import Txt2ImgRequest
from lib_profile.hosts.diffusers import samplers
from lib_profile.prompts import parse as prompts

REQ = dict(width=64, height=64, steps=3, cfg_scale=7.0, sampler="Euler", scheduler="Automatic", seed=21)
SOURCE = "portrait photo of a woman in a red sweater, warm light"
#: more than 75 tokens: two chunks; "scarf" and "hairband" (two word pieces) sit in the second
LONG = ("portrait photo of a woman in a red sweater, warm light, " + ", ".join(["studio"] * 32)
        + ", a green scarf and a hairband")


@pytest.fixture(scope="module")
def sdxl(data_dir):
    """tiny-sdxl with its attention peaked like a trained model's (random weights attend almost uniformly, which no
    attention edit can move): its attention query/key weights scaled up. Its own host: nothing else sees the change."""
    from lib_profile.hosts.diffusers.host import DiffusersHost

    from tests.conftest import peak_attention

    return peak_attention(DiffusersHost("tiny-sdxl", device="cpu", data_dir=data_dir))


def px(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), np.int16)


def plain(host, prompt, **req):
    return px(host.txt2img(Txt2ImgRequest(prompt=prompt, **{**REQ, **req})).images[0])


def edited(host, source=SOURCE, req=None, **edit):
    res = run_edit(host, Txt2ImgRequest(prompt=source, **{**REQ, **(req or {})}), Edit(source=source, **edit))
    return px(res.images[0]), px(res.images[1])


def test_prompts_have_the_chunks_the_tests_say():
    tok = tokenizer()
    assert prompts.chunk_count(tok, SOURCE) == 1 and prompts.chunk_count(tok, LONG) == 2
    tokens = TokenMap.from_prompt(tok, LONG)
    assert all(p >= 77 for p in tokens.positions(tok, "scarf") + tokens.positions(tok, "hairband"))
    assert len(tokens.positions(tok, "hairband")) == 2  # word pieces: hair, band</w>


# ---------------------------------------------------------------- the layout


class Spy(Controller):
    """Reads every cross-attention call: (site, grid, heads, keys, head width)."""

    def __init__(self):
        self.calls = []

    def needs_probs(self, site, step, queries):
        return site.cross

    def read(self, call, q, k, scale, upcast=False):
        self.calls.append((call.site, call.hw, q.shape[1], k.shape[2], q.shape[3]))


def _expected_cross_layers(cfg) -> int:
    """Transformer blocks (one cross-attention each) of a UNet config: down levels ``layers_per_block`` attentions,
    the mid block one, up levels one more than down; each attention ``transformer_layers_per_block`` deep."""
    depths = cfg["transformer_layers_per_block"]
    depths = [depths] * len(cfg["down_block_types"]) if isinstance(depths, int) else list(depths)
    crossed = [d if "CrossAttn" in kind else 0 for d, kind in zip(depths, cfg["down_block_types"])]
    per = cfg["layers_per_block"]
    return sum(per * d for d in crossed) + crossed[-1] + sum((per + 1) * d for d in crossed)


def test_sdxl_attention_layout_real_shapes():
    """SDXL base 1.0's UNet (diffusers' config, built on the meta device: no weights): 70 cross-attention sites, at
    the two deeper levels, 10 and 20 heads of 64 features; the controller's sites say so."""
    from diffusers import UNet2DConditionModel

    from lib_profile import families
    from lib_profile.hosts.diffusers import tiny_sdxl
    from lib_profile.hosts.diffusers.attention import sites

    cfg = dict(tiny_sdxl.tiny_sdxl_configs()["unet"], block_out_channels=[320, 640, 1280],
               transformer_layers_per_block=[1, 2, 10], cross_attention_dim=2048, attention_head_dim=[5, 10, 20],
               addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816, sample_size=128)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg)
    found = [s for _n, s in sites(unet)]
    cross = [s for s in found if s.cross]
    assert len(cross) == families.SDXL.cross_attention_layers == _expected_cross_layers(cfg) == 70
    assert len(found) == 140
    assert {s.heads for s in cross if s.name.startswith(("down_blocks.1.", "up_blocks.1."))} == {10}
    assert {s.heads for s in cross if s.name.startswith(("down_blocks.2.", "up_blocks.0.", "mid_block."))} == {20}
    assert not any(s.name.startswith(("down_blocks.0.", "up_blocks.2.")) for s in found)  # level 0: no attention
    assert [s.place for s in cross].count("mid") == 10


@pytest.mark.parametrize("width,height,prompt", [(64, 64, SOURCE), (64, 96, SOURCE), (96, 64, LONG)])
def test_sdxl_attention_layout_in_a_run(sdxl, width, height, prompt):
    """Every cross-attention call of a tiny-sdxl run: the tiny UNet's sites, at latent/2 and latent/4 (rounded up),
    heads 64 features wide, 77 keys per chunk of the prompt; the image is the plain one (a reader changes nothing)."""
    from lib_profile.hosts.base import RunControl

    cfg = dict(sdxl.model.unet.config)
    spy = Spy()
    req = Txt2ImgRequest(prompt=prompt, **{**REQ, "width": width, "height": height})
    image = sdxl.txt2img(req, RunControl(attention=spy)).images[0]
    assert np.array_equal(px(image), px(sdxl.txt2img(req).images[0]))
    lh, lw = height // 8, width // 8
    grids = {(-(-lh // f), -(-lw // f)) for f in (2, 4)}
    chunks = prompts.chunk_count(tokenizer(), prompt)
    seen = {}
    for site, hw, heads, keys, d in spy.calls:
        assert hw in grids and keys == 77 * chunks and d == 64 and heads == site.heads, (site.name, hw, keys, d)
        seen.setdefault(site.name, set()).add(hw)
    assert len(seen) == _expected_cross_layers(cfg) == 28
    assert len(spy.calls) == 28 * REQ["steps"]
    assert {hw for s in seen.values() for hw in s} == grids


# ---------------------------------------------------------------- words: the tokens both encoders read

WORD_PROMPTS = [SOURCE, LONG, "a (red:1.3) [sweater] with a hairband BREAK warm light", "photo1 of a redhead, 4k",
                ", ".join(["portrait photo of a woman in a red sweater"] * 12)]  # 4 chunks


@pytest.mark.parametrize("prompt", WORD_PROMPTS)
def test_word_positions_are_the_tokens_both_encoders_read(sdxl, prompt):
    """The word -> token positions explain and edit use are where both SDXL encoders read those very token ids (the
    second pads with 0 after the end token, never over a word)."""
    from lib_profile.hosts.diffusers.sdxl_prompts import SdxlPromptEncoder

    tok = tokenizer()
    tokens = TokenMap.for_host(sdxl, tok, prompt)
    encoder = SdxlPromptEncoder(sdxl.model)
    assert tokens.chunks == encoder.chunks(prompt)
    _parts, ids, ids_2 = encoder.token_ids(prompt, tokens.chunks)
    flat, flat_2 = ids.flatten().tolist(), ids_2.flatten().tolist()
    assert tokens.tokens and all(flat[t.position] == flat_2[t.position] == t.id for t in tokens.tokens)
    context, _pooled = encoder.encode(prompt, tokens.chunks)
    assert context.shape[1] == 77 * tokens.chunks  # the keys the positions index


# ---------------------------------------------------------------- explain


@pytest.mark.parametrize("width,height,prompt,words", [
    (64, 64, SOURCE, ["woman", "red sweater", "light"]),
    (64, 96, SOURCE, ["sweater", "red"]),
    (96, 64, LONG, ["scarf", "hairband", "woman", "studio#3"]),  # the second chunk, word pieces, a repeated word
    (64, 64, "a (red:1.3) [sweater] with a hairband BREAK warm light", ["red", "hairband", "warm light"]),
])
def test_explain_gives_one_map_per_word_of_the_image_size(sdxl, width, height, prompt, words):
    req = Txt2ImgRequest(prompt=prompt, **{**REQ, "width": width, "height": height})
    ex = explain(sdxl, req, words)
    assert list(ex.maps) == words
    for word, m in ex.maps.items():
        assert m.shape == (height, width), word
        assert m.min() >= 0 and m.max() <= 1 and m.max() > 0.99 and np.isfinite(m).all(), word
    assert not np.allclose(ex.maps[words[0]], ex.maps[words[1]])  # each word its own map
    assert ex.image.size == (width, height) and np.array_equal(px(ex.image), plain(sdxl, prompt, width=width,
                                                                                    height=height))
    # every down and up block cross-attention layer (DAAM: not the mid block), every step
    assert ex.summed["layers"] == list(range(25)) and ex.summed["steps"] == REQ["steps"]


# ---------------------------------------------------------------- Prompt-to-Prompt


def test_a_swap_to_the_same_words_with_tau_one_reproduces_the_source(sdxl):
    source = plain(sdxl, SOURCE)
    for edit in (dict(mode="swap", target=SOURCE, cross_steps=1.0, self_steps=1.0),
                 dict(mode="reweight", weights={"sweater": 1.0}, cross_steps=1.0)):
        src, out = edited(sdxl, **edit)
        assert np.abs(src - source).max() <= 2, edit
        assert np.abs(out - src).max() <= 2, edit


def test_an_edit_changes_the_image_and_keeps_the_sources_layout(sdxl):
    target = SOURCE.replace("red sweater", "green jacket")
    free = plain(sdxl, target)
    src, out = edited(sdxl, mode="swap", target=target, cross_steps=1.0, self_steps=0.4)
    assert np.abs(out - src).mean() > 1.0  # the edit changed the image
    assert np.abs(out - free).mean() > 1.0  # not the plain target image
    assert np.abs(out - src).mean() < np.abs(free - src).mean()  # closer to the source than the plain target is
    _src, none = edited(sdxl, mode="swap", target=target, cross_steps=0.0, self_steps=0.0)
    assert np.abs(none - free).max() <= 2  # tau 0: nothing injected, the plain target
    src2, out2 = edited(sdxl, mode="refine", target="portrait photo of a smiling woman in a red sweater, warm light")
    assert np.abs(src2 - src).max() <= 2 and np.abs(out2 - src2).mean() > 0.5
    _src3, out3 = edited(sdxl, mode="reweight", weights={"sweater": -2.0})
    assert np.abs(out3 - src).mean() > 0.5


def test_the_edited_image_has_the_edited_prompts_pooled_vector(sdxl):
    """SDXL's pooled text (OpenCLIP bigG's projected end token) goes to the UNet's added embedding, not through
    attention: each image of the pair keeps its own prompt's, so the edit has the edited prompt's (and the source
    its portrait's), as any SDXL Prompt-to-Prompt that encodes both prompts does."""
    from lib_profile.hosts.diffusers.sdxl_prompts import SdxlPromptEncoder

    target = SOURCE.replace("red", "blue")
    seen = []
    handle = sdxl.model.unet.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.append(kwargs["added_cond_kwargs"]["text_embeds"].clone()), with_kwargs=True)
    try:
        edited(sdxl, mode="swap", target=target)
    finally:
        handle.remove()
    encoder = SdxlPromptEncoder(sdxl.model)
    want_src, want_edit = encoder.encode(SOURCE)[1][0], encoder.encode(target)[1][0]
    assert not torch.allclose(want_src, want_edit)
    assert len(seen) == REQ["steps"]
    for pooled in seen:  # [negative x2 (zeros: an empty negative prompt), source, edit]
        assert pooled.shape[0] == 4 and torch.count_nonzero(pooled[:2]) == 0
        assert torch.allclose(pooled[2], want_src) and torch.allclose(pooled[3], want_edit)


LONG_EDITS = [
    # (source, edit, expectations): the same words over two chunks; a swap in the second chunk; a one-chunk source
    # whose refinement needs two (its source stays its portrait: each row attends to its own keys)
    (LONG, dict(mode="swap", target=LONG, cross_steps=1.0, self_steps=1.0), "same"),
    (LONG, dict(mode="swap", target=LONG.replace("green scarf", "blue scarf")), "changed"),
    (SOURCE, dict(mode="refine", target=LONG), "changed"),
    (LONG, dict(mode="reweight", weights={"scarf": 1.8}), "changed"),
]


@pytest.mark.parametrize("source,edit,expect", LONG_EDITS)
def test_long_prompts_edit_over_their_chunks(sdxl, source, edit, expect):
    src, out = edited(sdxl, source=source, **edit)
    assert np.abs(src - plain(sdxl, source)).max() <= 2  # the source is its own portrait
    if expect == "same":
        assert np.abs(out - src).max() <= 2
    else:
        assert np.abs(out - src).mean() > 0.5


@pytest.mark.parametrize("sampler", samplers.sampler_names())
def test_every_sampler_explains_and_edits(sdxl, sampler):
    """Explain leaves the image the plain one and gives its maps; the same-words swap gives the source back and a
    word swap changes the edit: with each sampler (second-order ones evaluate twice a step, PLMS once more).

    The source is compared with the same pair made without attention control: a batch of two is not bit for bit two
    single images on CPU, and PLMS's 2-step start on this peaked model blows that up to 18/255 with nothing edited
    (a plain pair against a plain single image; Euler: 1/255), whereas the edit machinery adds nothing (0)."""
    from lib_profile.attention.p2p import edit_request

    req = Txt2ImgRequest(prompt=SOURCE, **{**REQ, "sampler": sampler, "steps": 2})
    source = px(sdxl.txt2img(req).images[0])
    ex = explain(sdxl, req, ["sweater"])
    assert np.array_equal(px(ex.image), source) and ex.maps["sweater"].shape == (64, 64)
    assert ex.summed["steps"] == 2
    same = Edit(source=SOURCE, target=SOURCE, cross_steps=1.0, self_steps=1.0)
    pair = [px(im) for im in sdxl.txt2img(edit_request(req, same)).images]
    res = run_edit(sdxl, req, same)
    src, out = px(res.images[0]), px(res.images[1])
    assert np.abs(src - pair[0]).max() <= 2 and np.abs(out - src).max() <= 2
    res = run_edit(sdxl, req, Edit(source=SOURCE, target=SOURCE.replace("red sweater", "green jacket"),
                                   cross_steps=1.0))
    assert np.abs(px(res.images[1]) - px(res.images[0])).mean() > 0.5
    assert res.params["sampler"] == sampler


def test_attention_control_is_not_refused_on_sdxl(sdxl):
    from lib_profile.hosts.base import RunControl

    assert sdxl.attention_control
    sdxl.check_attention_control("Explain (DAAM word maps)")
    sdxl.txt2img(Txt2ImgRequest(prompt="a", width=64, height=64, steps=1), RunControl(attention=Controller()))


# ---------------------------------------------------------------- the studio's API, as a user meets it


@pytest.fixture
def sdxl_api(data_dir, tmp_path):
    """The studio's HTTP API over a plain tiny-sdxl (not the peaked one: a portrait's later passes, made again after
    an edit, would blow a float's last bit up into another picture)."""
    import httpx

    from lib_profile import API_PREFIX
    from lib_profile.serve import make_app
    from lib_profile.hosts.diffusers.host import DiffusersHost
    from lib_profile.service import Studio
    from tests.test_api import Server

    studio = Studio(DiffusersHost("tiny-sdxl", device="cpu", data_dir=data_dir), tmp_path / "data", lora_root=tmp_path / "webui" / "models" / "Lora" / "profile-studio",
                    outputs_root=tmp_path / "webui" / "outputs" / "profile-studio")
    server = Server(make_app(lambda: studio, ui=False))
    try:
        with httpx.Client(base_url=server.url + API_PREFIX, timeout=120) as client:
            yield client
    finally:
        server.stop()
        studio.close()


def test_explain_and_edit_an_sdxl_portrait_through_the_api(sdxl_api):
    from lib_profile import API_PREFIX
    from tests.test_api import wait

    api = sdxl_api

    def get(link):
        return api.get(link.replace(API_PREFIX, ""))

    api.post("/identities", json={"name": "Sdxl Person"}).raise_for_status()
    slug = "sdxl-person"
    gen = wait(api, api.post(f"/identities/{slug}/generate", json={
        "count": 1, "seed": 7, "prompt": "studio portrait of a woman in a red sweater",
        "settings": {"width": 64, "height": 64, "steps": 3}, "switches": {"upscale": False}}).json()["id"])
    assert gen["state"] == "done", gen["error"]
    image = gen["result"]["images"][0]["file"]
    portrait = get(f"/files/{slug}/{gen['id']}/{image}").content

    ex = api.post("/explain", json={"identity": slug, "job": gen["id"], "image": image, "words": ["sweater", "red"]})
    assert ex.status_code == 202, ex.text
    ex = wait(api, ex.json()["id"])
    assert ex["state"] == "done", ex["error"]
    assert ex["result"]["seed"] == 7 and set(ex["result"]["words"]) == {"sweater", "red"}
    assert get(ex["links"]["overlay:sweater"]).status_code == 200
    heat = np.load(io.BytesIO(get(f"/files/{slug}/{ex['id']}/{ex['result']['words']['sweater']['map']}").content))
    assert heat.shape == (64, 64) and 0 <= heat.min() and heat.max() <= 1

    ed = api.post("/edit", json={"identity": slug, "job": gen["id"], "image": image, "mode": "swap",
                                 "replace": {"red": "blue"}})
    assert ed.status_code == 202, ed.text
    ed = wait(api, ed.json()["id"])
    assert ed["state"] == "done", ed["error"]
    edited_png = Image.open(io.BytesIO(get(ed["links"]["edited"]).content))
    assert "blue sweater" in edited_png.text["parameters"] and "Prompt-to-Prompt" in edited_png.text["parameters"]
    assert ed["result"]["injected"] == [{"steps": 3, "cross": 2, "self": 1}]
    assert get(ed["links"]["source"]).content == portrait  # before: the portrait itself
    assert edited_png.size == Image.open(io.BytesIO(portrait)).size
    assert not np.array_equal(px(edited_png), px(Image.open(io.BytesIO(portrait))))  # the edit changed it

    same = wait(api, api.post("/edit", json={"identity": slug, "job": gen["id"], "image": image, "mode": "reweight",
                                             "weights": {"sweater": 1.0}}).json()["id"])  # changes nothing
    assert same["state"] == "done", same["error"]
    same_png = Image.open(io.BytesIO(get(same["links"]["edited"]).content))
    assert np.abs(px(same_png) - px(Image.open(io.BytesIO(portrait)))).max() <= 2

    # a later pass: the refine pass (an img2img) explained, and edited then finished
    refine = {"identity": slug, "job": gen["id"], "image": image, "stage": 2}
    later = wait(api, api.post("/explain", json={**refine, "words": ["sharp focus"]}).json()["id"])
    assert later["state"] == "done", later["error"]
    assert set(later["result"]["words"]) == {"sharp focus"} and later["result"]["pass"] == "refine"
    soft = wait(api, api.post("/edit", json={**refine, "replace": {"sharp": "soft"}}).json()["id"])
    assert soft["state"] == "done", soft["error"]
    assert soft["result"]["pass"] == "refine" and soft["result"]["finished"]

    # a new prompt of two chunks with hires fix: its hires pass explained, and edited through both passes
    hires = {"width": 64, "height": 64, "steps": 3, "hires_scale": 1.5, "hires_steps": 2}
    new = {"identity": slug, "prompt": LONG, "seed": 3, "settings": hires}
    ex = wait(api, api.post("/explain", json={**new, "hires": True, "words": ["scarf", "hairband"]}).json()["id"])
    assert ex["state"] == "done", ex["error"]
    assert ex["result"]["pass"] == "hires"
    assert Image.open(io.BytesIO(get(ex["links"]["image"]).content)).size == (96, 96)
    heat = np.load(io.BytesIO(get(f"/files/{slug}/{ex['id']}/{ex['result']['words']['hairband']['map']}").content))
    assert heat.shape == (96, 96)
    ed = wait(api, api.post("/edit", json={**new, "replace": {"green": "blue"}}).json()["id"])
    assert ed["state"] == "done", ed["error"]
    # the hires pass runs int(2 x 0.5) = 1 of its 2 steps (the WebUI's img2img share): tau 0.8 of 1 step, self 0.4 of 1
    assert ed["result"]["injected"] == [{"steps": 3, "cross": 2, "self": 1}, {"steps": 1, "cross": 1, "self": 0}]
    assert Image.open(io.BytesIO(get(ed["links"]["edited"]).content)).size == (96, 96)

    bad = api.post("/edit", json={"identity": slug, "job": gen["id"], "image": image, "target": "a cat"})
    assert bad.status_code == 400 and "number of words" in bad.json()["detail"]
    bad = api.post("/explain", json={"identity": slug, "job": gen["id"], "image": image, "words": ["dog"]})
    assert bad.status_code == 400 and "not in the prompt" in bad.json()["detail"]
