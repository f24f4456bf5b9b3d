"""The WebUI's prompt editing ``[a:b:when]`` and alternation ``[a|b]``: schedules, the diffusers host, refusals.

The expected schedules are A1111's (modules/prompt_parser.py: its documented examples, and its
``get_learned_conditioning_prompt_schedules`` run on these prompts); the per-evaluation table follows its
``reconstruct_cond_batch``: evaluation ``e`` (0-based) takes the first entry with ``e <= end``.
"""

import numpy as np
import pytest
import torch

from lib_profile.hosts.base import HostError, Txt2ImgRequest
from lib_profile.prompts.schedule import is_scheduled, schedule, text_at, total_steps

S = lambda p, steps=10, hires=None: [list(e) for e in schedule(p, steps, hires)]  # noqa: E731

# (prompt, steps, hires steps, expected schedule) - A1111's doctests first
TABLE = [
    ("test", 10, None, [[10, "test"]]),
    ("a [b:3]", 10, None, [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", 10, None, [[3, "a "], [10, "a b"]]),
    ("a [[[b]]:2]", 10, None, [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", 10, None, [[3, ""], [10, "(a:2)"]]),
    ("a [b : c : 1] d", 10, None, [[1, "a b  d"], [10, "a  c  d"]]),
    ("a[b:[c:d:2]:1]e", 10, None, [[1, "abe"], [2, "ace"], [10, "ade"]]),
    ("a [unbalanced", 10, None, [[10, "a [unbalanced"]]),
    ("a [b:.5] c", 10, None, [[5, "a  c"], [10, "a b c"]]),
    ("((a][:b:c [d:3]", 10, None, [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
    ("[a|(b:1.1)]", 10, None, [[i, "a" if i % 2 else "(b:1.1)"] for i in range(1, 11)]),
    ("[fe|]male", 10, None, [[i, "female" if i % 2 else "male"] for i in range(1, 11)]),
    ("[fe|||]male", 10, None, [[i, "female" if i % 4 == 1 else "male"] for i in range(1, 11)]),
    ("a [b:.5] c", 10, 10, [[10, "a b c"]]),
    ("a [b:1.5] c", 10, 10, [[5, "a  c"], [10, "a b c"]]),
    # the example at the top of A1111's prompt_parser.py, 100 steps
    ("fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6]"
     "[: in background:0.25] [shoddy:masterful:0.5]", 100, None,
     [[25, "fantasy landscape with a mountain and an oak in foreground shoddy"],
      [50, "fantasy landscape with a lake and an oak in foreground in background shoddy"],
      [60, "fantasy landscape with a lake and an oak in foreground in background masterful"],
      [75, "fantasy landscape with a lake and an oak in background masterful"],
      [100, "fantasy landscape with a lake and a christmas tree in background masterful"]]),
    ("[red:blue:0.5] car", 30, None, [[15, "red car"], [30, "blue car"]]),
    ("[red:blue:10] car", 30, None, [[10, "red car"], [30, "blue car"]]),
    ("[red:blue:40] car", 30, None, [[30, "red car"]]),  # past the end: never switches
    ("[a:0.3]", 30, None, [[9, ""], [30, "a"]]),
    ("[:b:0.3]", 30, None, [[9, ""], [30, "b"]]),
    ("[a::0.3] x", 30, None, [[9, "a x"], [30, " x"]]),
    ("[a:b:0]", 30, None, [[30, "b"]]),
    ("[a:b:-1]", 30, None, [[30, "b"]]),
    ("[a:b:1e1]", 30, None, [[10, "a"], [30, "b"]]),
    ("[(red:1.3):blue:0.5]", 4, None, [[2, "(red:1.3)"], [4, "blue"]]),
    ("[a:[b:c:0.8]:0.2]", 10, None, [[2, "a"], [8, "b"], [10, "c"]]),
    ("x|y [a:b:0.5]", 10, None, [[10, "x|y [a:b:0.5]"]]),  # a bare | makes the prompt plain text
    ("trailing \\", 10, None, [[10, "trailing \\"]]),
    ("\\[a:b:0.5\\]", 10, None, [[10, "\\[a:b:0.5\\]"]]),  # escaped brackets are text
    ("(a:b:0.5)", 10, None, [[10, "(a:b:0.5)"]]),
    ("[a:b:0.5:0.2]", 10, None, [[10, "[a:b:0.5:0.2]"]]),
    ("[a:b:c]", 10, None, [[10, "[a:b:c]"]]),
    ("[a:b:10]", 20, 10, [[10, "b"]]),  # an integer counts on from the first pass: step 10 is behind the hires pass
    ("[a:b:25]", 20, 10, [[5, "a"], [10, "b"]]),
    ("[a|b]", 3, 4, [[1, "a"], [2, "b"], [3, "a"], [4, "b"]]),
]


@pytest.mark.parametrize("prompt,steps,hires,expected", TABLE)
def test_schedules_are_the_webuis(prompt, steps, hires, expected):
    assert S(prompt, steps, hires) == expected


# text of each model evaluation 0..29 of a 30-step first-order pass
PER_STEP = [
    ("[a:b:0.5]", ["a"] * 16 + ["b"] * 14),  # end 15 is inclusive: evaluations 0..15
    ("[a:b:10]", ["a"] * 11 + ["b"] * 19),
    ("[a:0.3]", [""] * 10 + ["a"] * 20),
    ("[:b:0.3]", [""] * 10 + ["b"] * 20),
    ("[a|b]", ["a", "a"] + ["b", "a"] * 14),  # evaluation 0 and 1 both take the step-1 entry
    ("[a|b|c]", ["a", "a", "b", "c"] + ["a", "b", "c"] * 8 + ["a", "b"]),
    ("[a:[b:c:20]:0.2]", ["a"] * 7 + ["b"] * 14 + ["c"] * 9),
    ("plain", ["plain"] * 30),
]


@pytest.mark.parametrize("prompt,texts", PER_STEP)
def test_text_of_every_evaluation(prompt, texts):
    entries = schedule(prompt, 30)
    assert [text_at(entries, e) for e in range(30)] == texts


def test_second_order_samplers_count_evaluations_twice():
    assert total_steps(20, "two") == 40 and total_steps(20, "one") == 20 and total_steps(20, "plms") == 20
    entries = schedule("[a:b:0.5]", total_steps(20, "two"))
    assert [text_at(entries, e) for e in range(39)] == ["a"] * 21 + ["b"] * 18
    plms = schedule("[a:b:0.5]", total_steps(4, "plms"))
    assert [text_at(plms, e) for e in range(5)] == ["a", "a", "a", "b", "b"]  # PLMS: n + 1 evaluations
    assert text_at(plms, 5) == "a"  # past the last end the WebUI takes the first entry


@pytest.mark.parametrize("prompt,scheduled", [
    ("[a:b:0.5]", True), ("[a|b]", True), ("x [b:3]", True), ("(a:1.2) [b] c", False), ("a [b:c] d", False),
    ("plain", False), ("x|y [a:b:0.5]", False), ("((a [b:c:2]))", True), ("<lora:x:0.8> a", False)])
def test_is_scheduled(prompt, scheduled):
    assert is_scheduled(prompt) is scheduled


def req(**kw):
    base = dict(prompt="a car", negative_prompt="", width=64, height=64, steps=10, sampler="Euler", seed=7,
                cfg_scale=7.0)
    base.update(kw)
    return Txt2ImgRequest(**base)


def pixels(result):
    return np.asarray(result.images[0], dtype=np.int16)


def test_prompt_editing_switches_the_conditioning_at_the_step(host):
    """``[red:blue:0.5]`` differs from red and from blue alone, and equals red switched to blue by hand after
    evaluation 5 of 10 (the WebUI's end step 5 is inclusive)."""
    edited = pixels(host.txt2img(req(prompt="[red:blue:0.5] car")))
    red, blue = pixels(host.txt2img(req(prompt="red car"))), pixels(host.txt2img(req(prompt="blue car")))
    assert np.abs(edited - red).max() > 0 and np.abs(edited - blue).max() > 0
    blue_cond, uncond = host.encode_prompts("blue car", "", 1)
    calls = []

    def swap(module, args, kwargs):
        calls.append(1)
        if len(calls) > 6:  # evaluations 6..9
            kwargs["encoder_hidden_states"] = torch.cat([uncond, blue_cond]).to(kwargs["encoder_hidden_states"])
        return args, kwargs

    handle = host.model.unet.register_forward_pre_hook(swap, with_kwargs=True)
    try:
        by_hand = pixels(host.txt2img(req(prompt="red car")))
    finally:
        handle.remove()
    assert len(calls) == 10
    assert np.abs(edited - by_hand).max() <= 1


def test_alternation_and_scheduled_negative_and_infotext(host):
    alt = host.txt2img(req(prompt="[red|blue] car"))
    assert "[red|blue] car" in alt.infotexts[0]  # the infotext keeps the WebUI syntax
    assert np.abs(pixels(alt) - pixels(host.txt2img(req(prompt="red car")))).max() > 0
    plain = pixels(host.txt2img(req(negative_prompt="ugly")))
    neg = pixels(host.txt2img(req(negative_prompt="[ugly:dark:0.3]")))
    assert np.abs(plain - neg).max() > 0
    # a schedule that never switches is the plain prompt, bit for bit; so is a prompt with stray brackets
    assert np.array_equal(pixels(host.txt2img(req(prompt="[red car:blue car:40]"))),
                          pixels(host.txt2img(req(prompt="red car"))))


def test_hires_pass_has_its_own_schedule(host):
    """``[a:b:0.5]`` is ``b`` through the whole hires pass, as in the WebUI."""
    kw = dict(steps=4, hires_scale=1.5, hires_steps=4, hires_denoising=0.5, hires_upscaler="Lanczos")
    texts = []
    original = host._embeds

    def spy(r, n, hires=False):
        out = original(r, n, hires)
        texts.append([out.texts_at(e)[0][0] for e in range(4)])
        return out

    host._embeds = spy
    try:
        host.txt2img(req(prompt="[red:blue:0.5]", **kw))
    finally:
        del host._embeds
    assert texts == [["red", "red", "red", "blue"], ["blue"] * 4]


@pytest.mark.parametrize("prompt", ["a [red:blue:0.5] car", "a [red|blue] car", "[a car:3]", "a (([red:blue:2]))"])
def test_explain_and_edit_refuse_scheduled_prompts(host, prompt):
    """DAAM and Prompt-to-Prompt map tokens that must stay put through the run: a prompt whose text changes with
    the step is refused with a message naming the syntax (source, edit or negative prompt of an edit)."""
    from lib_profile.attention import explain, p2p

    message = r"prompt editing \(\[from:to:when\]\) or alternation \(\[a\|b\]\)"
    with pytest.raises(HostError, match=message):
        explain.explain(host, req(prompt=prompt, steps=2), ["car"])
    cases = [(p2p.Edit(prompt, "a green car"), ""), (p2p.Edit("a red car", prompt), ""),
             (p2p.Edit("a red car", mode="reweight", weights={"red": 1.5}), prompt)]
    for edit, negative in cases:
        with pytest.raises(HostError, match=message):
            p2p.run_edit(host, req(prompt=edit.source, steps=2, negative_prompt=negative), edit)


@pytest.mark.parametrize("prompt,composable", [
    ("a cat AND a dog", True), ("a cat AND a dog:0.5", True), ("AND", True), ("(a:1.2) AND b", True),
    ("a cat and a dog", False), ("a BAND photo", False), ("ANDROID", False), ("a cat ANDa", False),
    ("<lora:AND:1> a", True), ("plain", False)])
def test_is_composable_is_the_webuis_word(prompt, composable):
    """The WebUI splits the prompt at the capital word AND (``\\bAND\\b``, after LoRA tags are taken out; a tag
    named AND is read as the word by this check, which only errs toward refusing)."""
    from lib_profile.prompts.schedule import is_composable
    assert is_composable(prompt) is composable


@pytest.mark.parametrize("prompt", ["a car AND a dog", "a car AND a dog:0.5", "a car AND a bus AND a tree"])
def test_and_is_refused_clearly_not_read_as_words(host, prompt):
    """The standalone host guides with one prompt: composable diffusion (``AND``) is refused naming the syntax,
    not encoded as the word 'AND' (which made another picture than the WebUI's); explain and edit refuse it too.
    A negative prompt reads AND as text in the WebUI as well, so it is accepted there."""
    from lib_profile.attention import explain, p2p

    with pytest.raises(HostError, match="cannot combine prompts with AND"):
        host.txt2img(req(prompt=prompt, steps=2))
    with pytest.raises(HostError, match="cannot combine prompts with AND"):
        explain.explain(host, req(prompt=prompt, steps=2), ["car"])
    with pytest.raises(HostError, match="cannot combine prompts with AND"):
        p2p.run_edit(host, req(prompt="a red car", steps=2), p2p.Edit("a red car", prompt))
    assert host.txt2img(req(prompt="a car", negative_prompt="blurry AND dark", steps=2)).images
