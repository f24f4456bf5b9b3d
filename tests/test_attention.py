"""Attention control on the diffusers host: DAAM word maps (against the reference ``daam`` package),
token positions for WebUI prompts, and no patch left behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lib_profile.attention.daam import DaamRecorder, TokenMap
from lib_profile.attention.explain import explain, tokenizer
from lib_profile.hosts.base import HostError, RunControl, Txt2ImgRequest

PROMPT = "a photo of a red cat sitting on a wooden sofa"
REQ = dict(width=128, height=128, steps=6, cfg_scale=7.0, sampler="Euler", scheduler="Automatic", seed=5)


def corr(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_maps_match_the_daam_package(host):
    daam = pytest.importorskip("daam")
    words = ["cat", "red", "sofa", "wooden sofa", "photo"]
    ours = explain(host, Txt2ImgRequest(prompt=PROMPT, **REQ), words)

    pipe = host.pipeline("txt2img")
    with daam.trace(pipe) as tc:
        tc.latent_hw = (REQ["height"] // 8) * (REQ["width"] // 8)  # daam hard-codes 512/768 px
        for hooker in tc.module:
            if hasattr(hooker, "latent_hw"):
                hooker.latent_hw = tc.latent_hw
        image = pipe(PROMPT, negative_prompt="", width=REQ["width"], height=REQ["height"],
                     num_inference_steps=REQ["steps"], guidance_scale=REQ["cfg_scale"],
                     generator=[torch.Generator("cpu").manual_seed(REQ["seed"])]).images[0]
        heat = tc.compute_global_heat_map()
        reference = {w: heat.compute_word_heat_map(w).expand_as(image).numpy() for w in words}
    assert np.abs(np.asarray(image, np.int16) - np.asarray(ours.image, np.int16)).max() <= 2  # same picture
    for word in words:
        assert corr(ours.maps[word], reference[word]) >= 0.99, word


def test_a_step_of_layers_is_summed_in_one_go_as_each_layer_alone(host):
    """DAAM keeps a step's queries and keys and computes the probabilities of all its layers of one shape together
    (few operations a step, for a launch-bound GPU): the sums are those of each layer computed alone, also when
    a step's layers are split into several groups, and no more than one step is held at a time."""
    from lib_profile.attention.control import Controller

    req = Txt2ImgRequest(prompt=PROMPT, **REQ)
    positions = TokenMap.from_prompt(tokenizer(), PROMPT).positions(tokenizer(), "cat")

    class EachLayer(DaamRecorder):
        read = Controller.read  # the probabilities of each layer as it comes

    class Watched(DaamRecorder):
        held = 0

        def read(self, call, q, k, scale, upcast=False):
            super().read(call, q, k, scale, upcast)
            self.held = max(self.held, len(self._pending))

    alone, grouped, split = EachLayer(positions), Watched(positions), DaamRecorder(positions)
    split.group_bytes = 1  # one layer a group
    for recorder in (alone, grouped, split):
        host.txt2img(req, RunControl(attention=recorder))
    layers = len(alone.raw)
    assert layers > 2 and set(grouped.raw) == set(split.raw) == set(alone.raw)
    assert len(grouped._sums) < layers  # layers of one shape were computed together
    assert len(split._sums) == layers
    for layer, sums in alone.raw.items():
        torch.testing.assert_close(grouped.raw[layer], sums, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(split.raw[layer], sums, rtol=1e-5, atol=1e-6)
    assert grouped.held == layers  # one step's layers, never more
    np.testing.assert_allclose(grouped.word_map(positions, (64, 64)), alone.word_map(positions, (64, 64)),
                               atol=1e-5)


def test_maps_read_after_a_generation_in_inference_mode(host):
    """Forge samples under ``torch.inference_mode()``: the sums made there are inference tensors, and the maps
    are read after the generation has returned (the last step's layers are summed then)."""
    req = Txt2ImgRequest(prompt=PROMPT, **REQ)
    positions = TokenMap.from_prompt(tokenizer(), PROMPT).positions(tokenizer(), "cat")
    plain = DaamRecorder(positions)
    host.txt2img(req, RunControl(attention=plain))
    rec = DaamRecorder(positions)
    with torch.inference_mode():
        host.txt2img(req, RunControl(attention=rec))
    np.testing.assert_allclose(rec.word_map(positions, (64, 64)), plain.word_map(positions, (64, 64)), atol=1e-5)


@pytest.mark.parametrize("width", [64, 512])
def test_an_overlay_caption_fits_the_picture(width):
    """The word under its map is sized to fit: on a small picture a long phrase is not cut off at the edge."""
    from lib_profile.attention.daam import overlay

    heat = np.linspace(0, 1, width * width).reshape(width, width)
    out = np.asarray(overlay(Image.new("RGB", (width, width), "grey"), heat, "sharp focus, soft light"))
    band = out[width:]
    assert out.shape[1] == width and band.shape[0] >= 10
    assert (band < 128).any()  # the caption is drawn ...
    assert (band[:, -4:] == 255).all()  # ... and ends before the right edge
    if width == 512:
        assert band.shape[0] <= 32  # one line at full size


def test_no_patch_is_left_behind(host):
    req = Txt2ImgRequest(prompt=PROMPT, **REQ)
    before = np.asarray(host.txt2img(req).images[0])
    processors = dict(host.model.unet.attn_processors)
    explain(host, req, ["cat"])
    after = np.asarray(host.txt2img(req).images[0])
    assert np.array_equal(before, after)
    assert {k: type(v) for k, v in host.model.unet.attn_processors.items()} == \
        {k: type(v) for k, v in processors.items()}
    assert not host.model.unet._forward_pre_hooks


def test_daam_only_reads_so_the_explained_image_is_the_plain_one_bit_for_bit(host):
    """DAAM changes no attention: the recorded layers keep the fused output (the probabilities are computed
    beside it, for the prompt rows alone), so explaining costs no change to the picture."""
    from lib_profile.attention.control import Chain

    req = Txt2ImgRequest(prompt=PROMPT, **{**REQ, "seeds": [5, 6], "batch_size": 2})
    plain_images = host.txt2img(req).images
    rec, shapes = DaamRecorder(image=1), []
    chain = Chain(rec)
    original = chain.read

    def read(call, q, k, scale, upcast=False):
        shapes.append((call.cond_rows, call.uncond_rows, q.shape[0], k.shape[0]))
        return original(call, q, k, scale, upcast)

    chain.read = read
    images = host.txt2img(req, RunControl(attention=chain)).images
    for a, b in zip(plain_images, images):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert shapes and all(s == ([0, 1], [], 2, 2) for s in shapes)  # the 2 prompt rows of the 4-row CFG batch
    assert rec.word_map(TokenMap.from_prompt(tokenizer(), PROMPT).positions(tokenizer(), "cat"), (32, 32)).max() > 0


def test_long_weighted_prompts_with_lora_tags():
    tok = tokenizer()
    filler = ", ".join(["studio portrait"] * 40)  # well past 75 tokens: two CLIP chunks
    prompt = f"{filler}, (smiling:1.3) woman BREAK blue background <lora:someone:0.8>"
    tokens = TokenMap.from_prompt(tok, prompt)
    assert tokens.chunks == 3
    smiling = tokens.positions(tok, "smiling")
    assert all(77 <= p < 154 for p in smiling)  # second chunk
    background = tokens.positions(tok, "blue background")
    assert all(p >= 154 for p in background) and len(background) == 2  # after BREAK: third chunk
    assert "someone" not in tokens.words() and "lora" not in tokens.words()
    with pytest.raises(HostError, match="not in the prompt"):
        tokens.positions(tok, "dog")


def test_long_prompt_maps_on_the_host(host):
    filler = ", ".join(["studio portrait"] * 40)
    out = explain(host, Txt2ImgRequest(prompt=f"{filler}, (smiling:1.3) woman, red scarf", **REQ),
                  ["smiling", "red scarf"])
    for word in ("smiling", "red scarf"):
        m = out.maps[word]
        assert m.shape == (128, 128) and 0 <= m.min() and m.max() <= 1 and m.std() > 0


def test_a_one_word_prompt_has_its_map(host):
    """The WebUI DAAM extension drew nothing for short prompts (a context-size check); one word is enough here."""
    out = explain(host, Txt2ImgRequest(prompt="cat", **REQ), ["cat"])
    m = out.maps["cat"]
    assert m.shape == (128, 128) and m.max() > 0.99 and m.std() > 0


def test_each_word_gets_its_own_map(sharp):
    """Maps that look alike for every word (a WebUI DAAM complaint) would mean the word's tokens were not picked
    out; on a model with peaked attention the words' maps differ."""
    words = ["woman", "red sweater", "warm light"]
    out = explain(sharp, Txt2ImgRequest(prompt=SOURCE, **{**REQ, "width": 64, "height": 64}), words)
    for i, a in enumerate(words):
        for b in words[i + 1:]:
            assert corr(out.maps[a], out.maps[b]) < 0.9, (a, b)


def test_layer_and_step_ranges_restrict_what_is_recorded(host):
    req = Txt2ImgRequest(prompt=PROMPT, **REQ)
    positions = TokenMap.from_prompt(tokenizer(), PROMPT).positions(tokenizer(), "cat")
    full, some = DaamRecorder(positions), DaamRecorder(positions, layers=(0, 1), steps=(0, 2))
    calls = {"full": 0, "some": 0}

    def counting(recorder, key):
        original = recorder.read

        def read(call, q, k, scale, upcast=False):
            calls[key] += 1
            return original(call, q, k, scale, upcast)

        recorder.read = read
        return recorder

    host.txt2img(req, RunControl(attention=counting(full, "full")))
    host.txt2img(req, RunControl(attention=counting(some, "some")))
    n_cross = len(full.raw)
    assert calls["full"] == n_cross * REQ["steps"]
    assert len(some.raw) == 2 and calls["some"] == 2 * 3
    assert corr(full.word_map(positions, (128, 128)), some.word_map(positions, (128, 128))) < 0.9999


def test_ranges_past_the_model_or_the_pass_say_so(host):
    req = Txt2ImgRequest(prompt=PROMPT, **REQ)
    positions = TokenMap.from_prompt(tokenizer(), PROMPT).positions(tokenizer(), "cat")
    with pytest.raises(HostError, match="first <= last"):
        DaamRecorder(positions, layers=(3, 1))
    past_layers, past_steps = DaamRecorder(positions, layers=(40, 41)), DaamRecorder(positions, steps=(6, 9))
    host.txt2img(req, RunControl(attention=past_layers))
    host.txt2img(req, RunControl(attention=past_steps))
    with pytest.raises(HostError, match=r"past this model's \d+ recorded cross-attention layers"):
        past_layers.word_map(positions, (32, 32))
    with pytest.raises(HostError, match=r"past the pass's 6 sampling steps \(0..5\)"):
        past_steps.word_map(positions, (32, 32))


def test_cli_explain_writes_overlays_maps_and_masks(tmp_path, tiny_checkpoint):
    from lib_profile.cli import main

    out = tmp_path / "ex"
    assert main(["explain", "--checkpoint", "tiny", "--prompt", PROMPT, "--word", "cat", "--word", "sofa",
                 "--width", "64", "--height", "64", "--steps", "3", "--seed", "1", "--threshold", "0.5",
                 "--out", str(out)]) == 0
    assert (out / "image.png").is_file() and (out / "00-cat.png").is_file() and (out / "01-sofa-mask.png").is_file()
    text = Image.open(out / "image.png").text["parameters"]  # PNG Info makes the same image in txt2img
    assert text.startswith(PROMPT) and "Seed: 1," in text and "Size: 64x64" in text
    assert main(["explain", "--checkpoint", "tiny", "--prompt", PROMPT, "--word", "dog", "--width", "64",
                 "--height", "64", "--steps", "2", "--out", str(out)]) == 2


# ------------------------------------------------------------------ Prompt-to-Prompt

P2P_REQ = dict(width=64, height=64, steps=8, cfg_scale=7.0, sampler="Euler", scheduler="Automatic", seed=21)
SOURCE = "portrait photo of a woman in a red sweater, warm light"


def px(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), np.int16)


def plain(host, prompt):
    return px(host.txt2img(Txt2ImgRequest(prompt=prompt, **P2P_REQ)).images[0])


def edited(host, size=None, **edit):
    from lib_profile.attention.p2p import Edit, run_edit

    req = {**P2P_REQ, **({"width": size, "height": size} if size else {})}
    res = run_edit(host, Txt2ImgRequest(prompt=SOURCE, **req), Edit(source=SOURCE, **edit))
    assert res.seeds == [P2P_REQ["seed"]] * 2
    return px(res.images[0]), px(res.images[1])


SWAPS = [("cat", "hippopotamus"), ("hippopotamus", "cat"), ("armadillo", "pangolin")]  # 1->3, 3->1, 2->2 tokens


@pytest.mark.parametrize("old,new", SWAPS)
def test_a_word_swap_keeps_each_attention_row_summing_to_one(old, new):
    """Word swap (Hertz et al. 2023, section 3.2): ``P_source @ mapper`` is still a distribution over the edit's tokens
    (every row sums to 1), and the new word gets exactly the old word's attention mass, split evenly over its tokens
    (the reference's ``get_replacement_mapper_``), whatever the two words' token counts."""
    from lib_profile.attention.p2p import Edit, token_mapping

    tok = tokenizer()
    source, target = f"a {old} sitting on a sofa, warm light", f"a {new} sitting on a sofa, warm light"
    old_pos, new_pos = (TokenMap.from_prompt(tok, p).positions(tok, w) for p, w in ((source, old), (target, new)))
    assert [len(old_pos), len(new_pos)] == [len(tok.tokenize(old)), len(tok.tokenize(new))]
    mapper, alphas = token_mapping(tok, Edit(source=source, target=target), 77)
    probs = torch.randn(2, 64, 77, generator=torch.Generator().manual_seed(3)).mul(3).softmax(-1)
    mapped = probs @ mapper
    assert torch.allclose(mapped.sum(-1), torch.ones(2, 64), atol=1e-5)
    assert torch.allclose(mapped[..., new_pos].sum(-1), probs[..., old_pos].sum(-1), atol=1e-6)
    if len(old_pos) == len(new_pos):  # one to one
        assert torch.equal(mapper[old_pos][:, new_pos], torch.eye(len(old_pos)))
    else:  # each new token: an equal share of the old word's summed attention
        share = mapped[..., new_pos]
        assert torch.allclose(share, probs[..., old_pos].sum(-1, keepdim=True) / len(new_pos), atol=1e-6)
    assert bool((alphas == 1).all())
    light = [TokenMap.from_prompt(tok, p).positions(tok, "light") for p in (source, target)]
    assert mapper[light[0][0], light[1][0]] == 1  # the words after the swap stay lined up


def token_alignment(x: list, y: list) -> list[int]:
    """The reference refinement's alignment of two token id lists (``seq_aligner.get_mapper``), written out: a global
    (Needleman-Wunsch) alignment scoring a match 1, a mismatch -1 and a gap 0, traced back from the end preferring a
    token of y left out, then a token of x left out, then the diagonal. For each token of y: its token of x, or -1."""
    score = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    for i in range(1, len(x) + 1):
        for j in range(1, len(y) + 1):
            diagonal = score[i - 1][j - 1] + (1 if x[i - 1] == y[j - 1] else -1)
            score[i][j] = max(score[i][j - 1], score[i - 1][j], diagonal)
    out, i, j = [-1] * len(y), len(x), len(y)
    while i > 0 and j > 0:
        if score[i][j] == score[i][j - 1]:
            j -= 1
        elif score[i][j] == score[i - 1][j]:
            i -= 1
        else:
            i, j = i - 1, j - 1
            out[j] = i
    return out


@pytest.mark.parametrize("source,target", [
    ("a photo of a woman", "a photo of a smiling woman"),
    (SOURCE, "portrait photo of a smiling woman in a red sweater, warm light"),
    ("a photo of a red cat sitting on a wooden sofa", "a photo of a cat on a sofa"),  # words removed
    ("a cat", "a dog and a cat"),  # which "a" is the source's: the reference keeps the first
    ("a hippopotamus on a sofa", "a hippopotamus on a red armadillo sofa"),  # words of several tokens
    ("portrait of a man with a hat", "a portrait of a man with a red hat and a cane"),
])
def test_refinement_aligns_words_as_the_reference_aligns_their_tokens(source, target):
    """Refinement (Hertz et al. 2023, section 3.2 "Adding a New Phrase"): we align words, the reference aligns tokens
    (``seq_aligner.get_refinement_mapper``). On edits that add or remove words, both give the same mapper and alphas
    over the prompt's tokens (BOS, words, EOS). After the edit's EOS both map padding to the source's same position
    (a word of the source, when words were removed: the reference's ``get_mapper``, which the oracle follows too)."""
    from lib_profile.attention.p2p import Edit, token_mapping

    tok = tokenizer()
    x, y = tok(source).input_ids, tok(target).input_ids
    mapper, alphas = token_mapping(tok, Edit(source=source, target=target, mode="refine"), 77)
    reference = token_alignment(x, y)
    expected = torch.zeros(77, len(y))
    for t, s in enumerate(reference):
        if s >= 0:
            expected[s, t] = 1
    assert torch.equal(mapper[:, :len(y)], expected)
    assert alphas[:len(y)].tolist() == [float(s >= 0) for s in reference]
    assert bool((alphas[len(y):] == 1).all())
    assert torch.equal(mapper[:, len(y):], torch.eye(77)[:, len(y):])  # padding: the source's same position


def test_local_blend_mask_is_the_references(steps=4, threshold=0.3):
    """Local blend (Hertz et al. 2023, Algorithm 1's local editing; the reference notebook's ``LocalBlend``): the blend
    words' cross-attention at the quarter-resolution layers, summed over every call of every step so far, per prompt
    summed over the words' tokens and averaged over heads, max-pooled 3x3, brought to the latent's size (nearest),
    normalised by its own maximum and thresholded; the mask is the union of the source's and the edit's, and the
    edit's latent becomes ``x_src + mask * (x_edit - x_src)``. The edit's map is the one it attends with after the
    edit (the reference stores the probabilities its controller then edits in place): the source's, mapped, at the
    steps whose cross-attention is injected. Hand-made probabilities, checked against that computation written
    out."""
    import torch.nn.functional as F

    from lib_profile.attention.control import Call, Site
    from lib_profile.attention.p2p import Edit, PromptToPrompt

    tok = tokenizer()
    source, target = "a photo of a cat on a sofa", "a photo of a dog on a sofa"
    edit = Edit(source=source, target=target, blend_words=["cat", "dog"], blend_threshold=threshold, cross_steps=0.5)
    p2p = PromptToPrompt(tok, edit, 1)
    latent_hw, hw, heads = (64, 48), (16, 12), 2
    p2p.begin(steps, latent_hw)
    positions = [TokenMap.from_prompt(tok, source).positions(tok, "cat"),
                 TokenMap.from_prompt(tok, target).positions(tok, "dog")]
    site = Site(7, "mid.attn2", "mid", True, heads)
    assert p2p.needs_probs(site, 0, hw[0] * hw[1])
    gen = torch.Generator().manual_seed(11)
    latents = torch.stack([torch.zeros(4, *latent_hw), torch.ones(4, *latent_hw)])
    sums = torch.zeros(2, *hw)

    def mask_of(maps):
        m = F.interpolate(F.max_pool2d(maps[:, None], 3, 1, 1), size=latent_hw)
        m = m / m.amax(dim=(2, 3), keepdim=True)
        return m > threshold  # (prompts, 1, h, w)

    masks = []
    for step in range(steps):
        now = torch.zeros(2, *hw)
        spots = torch.randint(hw[0] * hw[1], (2,), generator=gen)  # where each prompt's word is, this step
        for _evaluation in range(2):  # e.g. a second-order sampler's two model evaluations
            logits = torch.randn(2, heads, hw[0] * hw[1], 77, generator=gen) * 0.1
            for row, (pos, strength) in enumerate(zip(positions, (2.5, 5.0))):  # the source's word attends weakly
                logits[row, :, spots[row], pos[0]] += strength
            probs = logits.softmax(-1)
            p2p.probs(Call(site, step, steps, hw, cond_rows=[0, 1], keys=77), probs)
            injected = step < 2  # round(0.5 * 4): the edit attends with the source's map, "cat" onto "dog"
            for row, pos in enumerate(positions):
                seen = probs[0][..., positions[0]] if injected else probs[row][..., pos]
                now[row] += seen.sum(-1).mean(0).reshape(hw)
        sums += now
        expected = mask_of(sums)
        union = (expected[0] | expected[1]).float()
        out = p2p.step_end(step, latents)
        assert torch.equal(out[0], latents[0]) and torch.equal(out[1], union.expand(4, *latent_hw))
        masks.append((expected, mask_of(now)))
        assert 0 < float(union.mean()) < 0.5
    # the case is one where the reference's choices matter: the source's own mask adds to the edit's, and the
    # running sum differs from the step's own maps
    assert any(bool((e[0] & ~e[1]).any()) for e, _now in masks)
    assert any(not torch.equal(e, now) for e, now in masks)


def test_reweight_by_one_and_swap_to_the_same_prompt_reproduce_the_source(sharp):
    source = plain(sharp, SOURCE)
    for edit in (dict(mode="reweight", weights={"sweater": 1.0}), dict(mode="swap", target=SOURCE)):
        src, out = edited(sharp, **edit)
        assert np.abs(src - source).max() <= 2, edit
        assert np.abs(out - src).max() <= 2, edit


def test_swap_with_tau_zero_is_a_plain_generation_of_the_target(sharp):
    target = SOURCE.replace("red", "blue")
    _src, out = edited(sharp, mode="swap", target=target, cross_steps=0.0, self_steps=0.0)
    assert np.abs(out - plain(sharp, target)).max() <= 2


def test_swap_with_tau_one_keeps_the_source_layout_not_the_plain_target(sharp):
    target = SOURCE.replace("red sweater", "green jacket")
    src, out = edited(sharp, mode="swap", target=target, cross_steps=1.0, self_steps=0.4)
    free = plain(sharp, target)
    assert np.abs(out - free).mean() > 2.0  # clearly not the plain target image
    assert np.abs(out - src).mean() < np.abs(free - src).mean()  # closer to the source


def test_refine_and_reweight_change_the_edit_only(sharp):
    src, out = edited(sharp, mode="refine", target="portrait photo of a smiling woman in a red sweater, warm light")
    assert np.abs(src - plain(sharp, SOURCE)).max() <= 2 and np.abs(out - src).mean() > 0.5
    src2, out2 = edited(sharp, mode="reweight", weights={"sweater": -2.0})
    assert np.abs(out2 - src2).mean() > 0.5


def test_local_blend_keeps_the_rest_of_the_source(sharp):
    """At 256 px: the blend reads the quarter-resolution layers (8x8 here, 16x16 at 512 px) and max-pools them 3x3 as
    the reference does, so at 64 px (2x2) any peak would spread over the whole map and the mask cover everything."""
    target = SOURCE.replace("red", "blue")
    src, free = edited(sharp, 256, mode="swap", target=target, cross_steps=0.5, self_steps=0.2)
    src_b, blended = edited(sharp, 256, mode="swap", target=target, cross_steps=0.5, self_steps=0.2,
                            blend_words=["sweater"], blend_threshold=0.5)
    assert np.abs(blended - src_b).mean() < np.abs(free - src).mean()


def test_edit_leaves_no_patch_behind(sharp):
    before = plain(sharp, SOURCE)
    edited(sharp, mode="swap", target=SOURCE.replace("red", "blue"), blend_words=["sweater"])
    assert np.array_equal(before, plain(sharp, SOURCE))


@pytest.mark.parametrize("edit,message", [
    (dict(mode="swap", target="a woman"), "number of words"),
    (dict(mode="reweight"), "weight"),
    (dict(mode="reweight", weights={"sweater": 3}), "-2..2"),
    (dict(mode="morph"), "mode"),
    (dict(mode="swap", target=SOURCE, cross_steps=1.5), "cross_steps"),
    (dict(mode="swap", target=SOURCE, blend_words=["dog"]), "neither prompt"),
])
def test_bad_edits_are_named(sharp, edit, message):
    with pytest.raises(HostError, match=message):
        edited(sharp, **edit)


def test_cli_edit_writes_source_and_edit(tmp_path, tiny_checkpoint):
    from PIL import Image

    from lib_profile.cli import main

    out = tmp_path / "ed"
    assert main(["edit", "--checkpoint", "tiny", "--prompt", SOURCE, "--target", SOURCE.replace("red", "blue"),
                 "--width", "64", "--height", "64", "--steps", "3", "--seed", "4", "--out", str(out)]) == 0
    edited_png = Image.open(out / "edited.png")
    assert "blue sweater" in edited_png.text["parameters"] and (out / "source.png").is_file()
    assert main(["edit", "--checkpoint", "tiny", "--prompt", SOURCE, "--mode", "reweight", "--weight", "sweater=5",
                 "--out", str(out)]) == 2


class FirstPassIsAPhoto:
    """The diffusers host, except that its text-to-image pass returns a real face photo: the tiny model
    draws noise, and a detail pass needs a face to repaint. Every later pass runs on the real host."""

    def __init__(self, host, photo):
        self._host, self._photo = host, photo

    def __getattr__(self, name):
        return getattr(self._host, name)

    def txt2img(self, req, control=None):
        from lib_profile.hosts.base import Result

        return Result([self._photo.resize((req.width, req.height))], [req.seed], {"prompt": req.prompt})


def test_explaining_the_face_detail_pass_maps_the_words_on_the_repainted_face(host, astronaut):
    from lib_profile.attention.explain import explain_stage
    from lib_profile.studio.plan import build_plan

    plan = build_plan("studio portrait photo of a woman, blue eyes", None, None, "neutral", seed=4,
                      width=256, height=256, steps=3, switches={"refine": False, "detail2": False,
                                                                "upscale": False, "grade": False})
    plan.stages[1].params.update(steps=3, size=64)
    photo = astronaut.crop((100, 0, 400, 300))  # a face filling much of the frame
    result = explain_stage(FirstPassIsAPhoto(host, photo), plan, 4, 1, ["eyes", "woman"])
    assert set(result.maps) == {"eyes", "woman"} and result.image.size == (256, 256)
    for heat in result.maps.values():
        inside = heat > 0
        ys, xs = np.nonzero(inside)
        assert inside.mean() < 0.9 and heat.max() == pytest.approx(1.0, abs=1e-3)  # only on the face box
        box = heat[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        assert box.shape[0] >= 32 and box.shape[1] >= 32  # the repainted region, not a speck


def test_p2p_changes_attention_on_the_fused_path_and_reads_only_for_the_local_blend(sharp):
    """Self-attention is injected at the quarter-resolution layers and coarser (16x16 at 512 px, 16x24 on a
    2:3 portrait). Every change is a mix of rows on the fused path: no probabilities are materialised, except
    the blend words' maps that the local blend reads at the quarter-resolution cross-attention layers."""
    from lib_profile.attention.control import Chain, Site
    from lib_profile.attention.p2p import Edit, PromptToPrompt, edit_request

    p2p = PromptToPrompt(tokenizer(), Edit(source=SOURCE, target=SOURCE.replace("red", "blue")), 1)
    p2p.begin(20, (96, 64))  # a 512x768 portrait
    self_site, cross_site = Site(0, "down.attn1", "down", False, 8), Site(1, "down.attn2", "down", True, 8)
    assert p2p.changes(self_site, 0, 24 * 16) and p2p.changes(self_site, 0, 12 * 8)
    assert not p2p.changes(self_site, 0, 48 * 32) and not p2p.changes(self_site, 0, 96 * 64)
    assert not p2p.changes(self_site, 8, 24 * 16)  # past self_steps
    assert p2p.changes(cross_site, 0, 96 * 64) and not p2p.changes(cross_site, 16, 96 * 64)
    assert not any(p2p.needs_probs(site, 0, q) for site in (self_site, cross_site) for q in (24 * 16, 96 * 64))

    req = Txt2ImgRequest(prompt=SOURCE, **{**P2P_REQ, "width": 64, "height": 96})
    for blend in ([], ["sweater"]):
        edit = Edit(source=SOURCE, target=SOURCE.replace("red", "blue"), self_steps=1.0, blend_words=blend)
        chain = Chain(PromptToPrompt(tokenizer(), edit, 1))
        read, mixed = [], []
        original_read, original_mixes = chain.read, chain.mixes

        def reading(call, q, k, scale, upcast=False, read=read, original=original_read):
            read.append((call.site.cross, q.shape[2]))
            return original(call, q, k, scale, upcast)

        def mixes(call, like, mixed=mixed, original=original_mixes):
            out = original(call, like)
            mixed.extend((call.site.cross, call.hw[0] * call.hw[1], len(m.terms)) for m in out)
            return out

        chain.read, chain.mixes = reading, mixes
        sharp.txt2img(edit_request(req, edit), RunControl(attention=chain))
        coarse = 3 * 2  # a 12x8 latent's quarter
        assert {q for cross, q, _t in mixed if cross} == {96, 24, 6}  # every cross-attention layer
        assert {q for cross, q, _t in mixed if not cross} == {6}  # self-attention: the coarse layers alone
        assert read == ([(True, coarse)] * len(read) if blend else [])
        # the tiny model's one quarter-resolution cross-attention layer (its mid block), read at every step
        assert len(read) == (P2P_REQ["steps"] if blend else 0)


def test_hires_fix_maps_belong_to_the_pass_asked_for(host):
    """With hires fix on, the first pass's maps are those of the same image made without it; the hires pass
    has maps of its own, recorded on its larger latent."""
    words = ["cat", "sofa"]
    base = Txt2ImgRequest(prompt=PROMPT, **REQ)
    hires = Txt2ImgRequest(prompt=PROMPT, **REQ, hires_scale=1.5, hires_steps=4, hires_denoising=0.6)
    plain = explain(host, base, words)
    first = explain(host, hires, words)
    second = explain(host, hires, words, hires_pass=True)
    assert first.image.size == second.image.size == (192, 192) and plain.image.size == (128, 128)
    assert first.sampling_pass == "first" and second.sampling_pass == "hires"
    for word in words:
        small = np.asarray(Image.fromarray((first.maps[word] * 255).astype(np.uint8)).resize((128, 128)), np.float64)
        assert corr(small, plain.maps[word]) >= 0.99, word  # the first pass is the plain image's pass
        assert second.maps[word].shape == (192, 192) and corr(second.maps[word], first.maps[word]) < 0.999
    rec = DaamRecorder(sampling_pass=1)
    host.txt2img(hires, RunControl(attention=rec))
    assert rec.latent_hw == (24, 24) and max(w for _h, w in rec.grids.values()) == 24
    with pytest.raises(HostError, match="no hires fix pass"):
        explain(host, base, words, hires_pass=True)


def test_an_edit_holds_through_the_hires_pass(sharp):
    hires = dict(hires_scale=1.5, hires_steps=4, hires_denoising=0.5)
    from lib_profile.attention.p2p import Edit, run_edit

    req = Txt2ImgRequest(prompt=SOURCE, **P2P_REQ, **hires)
    source = px(sharp.txt2img(req).images[0])
    res = run_edit(sharp, req, Edit(source=SOURCE, mode="reweight", weights={"sweater": 1.0}))
    assert res.images[1].size == (96, 96)
    assert np.abs(px(res.images[0]) - source).max() <= 2 and np.abs(px(res.images[1]) - source).max() <= 2
    res = run_edit(sharp, req, Edit(source=SOURCE, target=SOURCE.replace("red", "blue")))
    assert np.abs(px(res.images[1]) - source).mean() > 0.5
    assert np.array_equal(source, px(sharp.txt2img(req).images[0]))  # nothing left behind
