"""Prompt reading the WebUI's way: tokenizer ids, emphasis, BREAK, chunks, extra-network tags."""

import pytest

from lib_profile.hosts import prompt as P
from lib_profile.hosts.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    return load_tokenizer(str(tiny_dir / "tokenizer"))


def test_tokenizer_gives_clip_ids(tokenizer):
    # the ids openai/clip-vit-large-patch14 gives for this sentence
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tokenizer) == 49408 and tokenizer.pad_token_id == 49407


@pytest.mark.parametrize("text, expected", [
    ("a cat", [("a cat", 1.0)]),
    ("a (cat)", [("a ", 1.0), ("cat", 1.1)]),
    ("a [cat]", [("a ", 1.0), ("cat", pytest.approx(1 / 1.1))]),
    ("a (cat:1.5) sat", [("a ", 1.0), ("cat", 1.5), (" sat", 1.0)]),
    ("((cat))", [("cat", pytest.approx(1.21))]),
    (r"\(literal\)", [("(literal)", 1.0)]),
    ("a BREAK b", [("a", 1.0), ("BREAK", -1), ("b", 1.0)]),
])
def test_emphasis_grammar(text, expected):
    assert P.parse_attention(text) == expected


def test_lora_tags_are_taken_out():
    parsed = P.parse("photo of sks woman, <lora:anna_v3:0.8>, smiling <hypernet:x>")
    assert [(n.kind, n.name, n.weight) for n in parsed.networks] == [("lora", "anna_v3", 0.8), ("hypernet", "x", 1.0)]
    assert "<" not in parsed.text


def test_chunks_hold_75_tokens_and_break_starts_a_new_one(tokenizer):
    chunks = P.chunk_tokens(tokenizer, [("cat " * 80, 1.0)])
    assert len(chunks) == 2 and all(len(c.ids) == 77 for c in chunks)
    assert chunks[0].ids[0] == 49406 and chunks[0].ids[-1] == 49407
    assert P.chunk_tokens(tokenizer, P.parse_attention("a cat BREAK a dog")).__len__() == 2
    assert len(P.chunk_tokens(tokenizer, [("", 1.0)])) == 1


def test_token_count_ignores_tags_and_weights(tokenizer):
    assert P.token_count(tokenizer, "a photo of a cat") == 5
    assert P.token_count(tokenizer, "a (photo:1.2) of a cat <lora:x:1>") == 5


def test_weights_follow_their_tokens(tokenizer):
    chunk = P.chunk_tokens(tokenizer, P.parse_attention("a (red:1.5) car"))[0]
    red = tokenizer("red", add_special_tokens=False).input_ids[0]
    assert chunk.weights[chunk.ids.index(red)] == 1.5
    assert chunk.weights[1] == 1.0
