"""Chunk-true edits: the source of an edit is conditioned exactly as its portrait was, also when the edit's prompt
needs more 75-token CLIP chunks than the portrait's (a longer swapped word, a tone suffix near the boundary). The
batch pads the shorter prompt with an empty chunk; each row attends to its own prompt's keys only."""

from __future__ import annotations

import numpy as np
import pytest

from lib_profile.attention.explain import tokenizer
from lib_profile.attention.p2p import Edit, edit_control, edit_request
from lib_profile.prompts import parse as prompts
from lib_profile.hosts.base import Txt2ImgRequest
from lib_profile.studio.tone import get_tone

REQ = dict(width=64, height=64, steps=6, cfg_scale=7.0, sampler="Euler", seed=21)


def prompt_of(tokens: int, tone: str) -> str:
    """A portrait prompt of exactly ``tokens`` CLIP tokens, ending with the tone's suffix and holding "red"."""
    tok = tokenizer()
    suffix = get_tone(tone).prompt
    head = "portrait photo of a woman in a red sweater"
    filler = []
    while prompts.token_count(tok, ", ".join([head, *filler, suffix])) < tokens:
        filler.append("studio")
    text = ", ".join([head, *filler, suffix])
    if prompts.token_count(tok, text) > tokens:  # ", studio" is two tokens: end on a plain word instead
        text = ", ".join([head, *filler[:-1], suffix]).replace(head, head + " studio", 1)
    assert prompts.token_count(tok, text) == tokens, (tokens, prompts.token_count(tok, text))
    return text


@pytest.fixture(scope="module", autouse=True)
def clip_with_a_mean(sharp):
    """The tiny text encoder's final layer norm given a bias, as real CLIP's learned one: its outputs' mean is not ~0,
    so the WebUI's emphasis normalisation (restore each chunk's mean) acts as it does on a real model."""
    import torch

    norm = sharp.model.text_encoder.text_model.final_layer_norm
    with torch.no_grad():
        norm.bias.copy_(torch.randn(norm.bias.shape, generator=torch.Generator().manual_seed(3)) * 0.2 + 0.1)


def px(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), np.int16)


@pytest.mark.parametrize("tokens", [74, 75, 76, 150])
@pytest.mark.parametrize("tone", ["warm", "cool", "warm, emphasis"])
def test_the_source_of_an_edit_is_its_portrait_whatever_the_chunks(sharp, tokens, tone):
    tok = tokenizer()
    emphasis = tone.endswith(", emphasis")
    tone = tone.split(",")[0]
    source = prompt_of(tokens, tone)
    if emphasis:  # a weighted word: the chunk's mean is restored after weighting, per chunk as the WebUI does
        source = source.replace("woman", "(woman:1.4)", 1)
    target = source.replace("red", "burgundy and scarlet striped", 1)  # +4 tokens: may cross a chunk
    negative = get_tone(tone).negative_prompt
    req = Txt2ImgRequest(prompt=source, negative_prompt=negative, **REQ)
    portrait = px(sharp.txt2img(req).images[0])
    edit = Edit(source=source, target=target, mode="refine")
    result = sharp.txt2img(edit_request(req, edit), edit_control(sharp, edit, negative))
    before, after = px(result.images[0]), px(result.images[1])
    assert np.abs(before - portrait).max() <= 2, (prompts.chunk_count(tok, source), prompts.chunk_count(tok, target))
    assert np.abs(after - before).mean() > 0.5  # and the edit changed something


def test_an_edit_with_fewer_chunks_than_its_source_leaves_the_source_alone(sharp):
    source = prompt_of(76, "warm")
    target = source.replace(", golden hour glow", "")  # back to one chunk
    req = Txt2ImgRequest(prompt=source, **REQ)
    portrait = px(sharp.txt2img(req).images[0])
    edit = Edit(source=source, target=target, mode="refine")
    result = sharp.txt2img(edit_request(req, edit), edit_control(sharp, edit, ""))
    assert np.abs(px(result.images[0]) - portrait).max() <= 2


def test_the_cli_edit_of_a_75_token_prompt_starts_from_the_txt2img_picture(tmp_path):
    """The replayed case (tests/data/prompt_75tok_cli.txt: 75 CLIP tokens ending in "red scarf"): ``edit --target``
    with "red" swapped for a 4-token phrase needs a second chunk; its source.png is the picture ``txt2img`` makes
    from the same prompt and seed (it was another picture: the source got a padded extra chunk)."""
    from pathlib import Path

    from PIL import Image

    from lib_profile.cli import main

    prompt = (Path(__file__).parent / "data" / "prompt_75tok_cli.txt").read_text("utf-8").strip()
    assert prompts.token_count(tokenizer(), prompt) == 75
    same = ["--checkpoint", "tiny", "--prompt", prompt, "--width", "64", "--height", "64", "--steps", "4",
            "--sampler", "Euler", "--scheduler", "Automatic", "--cfg-scale", "6.5", "--clip-skip", "1",
            "--seed", "7", "--negative-prompt", ""]
    target = prompt.replace("red scarf", "burgundy and scarlet striped scarf")
    assert main(["edit", *same, "--target", target, "--mode", "refine", "--out", str(tmp_path / "edit")]) == 0
    assert main(["txt2img", *same, "--out", str(tmp_path / "plain")]) == 0
    plain = next((tmp_path / "plain").glob("*.png"))
    source = px(Image.open(tmp_path / "edit" / "source.png"))
    assert np.abs(source - px(Image.open(plain))).max() <= 2
