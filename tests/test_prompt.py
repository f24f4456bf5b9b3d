"""Prompt reading the WebUI's way: tokenizer ids, emphasis, BREAK, chunks, extra-network tags."""

import pytest

from lib_profile.prompts import parse
from lib_profile.prompts.tokenizer import load_tokenizer


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
    assert parse.parse_attention(text) == expected


def test_lora_tags_are_taken_out():
    parsed = parse.parse("photo of sks woman, <lora:anna_v3:0.8>, smiling <hypernet:x>")
    assert [(n.kind, n.name, n.weight) for n in parsed.networks] == [("lora", "anna_v3", 0.8), ("hypernet", "x", 1.0)]
    assert "<" not in parsed.text


def test_chunks_hold_75_tokens_and_break_starts_a_new_one(tokenizer):
    chunks = parse.chunk_tokens(tokenizer, [("cat " * 80, 1.0)])
    assert len(chunks) == 2 and all(len(c.ids) == 77 for c in chunks)
    assert chunks[0].ids[0] == 49406 and chunks[0].ids[-1] == 49407
    assert parse.chunk_tokens(tokenizer, parse.parse_attention("a cat BREAK a dog")).__len__() == 2
    assert len(parse.chunk_tokens(tokenizer, [("", 1.0)])) == 1


def test_token_count_ignores_tags_and_weights(tokenizer):
    assert parse.token_count(tokenizer, "a photo of a cat") == 5
    assert parse.token_count(tokenizer, "a (photo:1.2) of a cat <lora:x:1>") == 5


def test_weights_follow_their_tokens(tokenizer):
    chunk = parse.chunk_tokens(tokenizer, parse.parse_attention("a (red:1.5) car"))[0]
    red = tokenizer("red", add_special_tokens=False).input_ids[0]
    assert chunk.weights[chunk.ids.index(red)] == 1.5
    assert chunk.weights[1] == 1.0


@pytest.fixture(scope="module")
def text_encoder(tiny_dir):
    from transformers import CLIPTextModel

    import torch

    model = CLIPTextModel.from_pretrained(str(tiny_dir / "diffusers" / "text_encoder")).eval()
    with torch.no_grad():  # a learned final layer norm, as real CLIP's: outputs whose mean is not ~0
        norm = model.text_model.final_layer_norm
        norm.bias.copy_(torch.randn(norm.bias.shape, generator=torch.Generator().manual_seed(3)) * 0.2 + 0.1)
    return model


# (prompt, min_chunks): emphasis in the first, the second or both chunks, alone or padded with empty chunks (to a
# negative prompt's length, or an edit's source to its edit's), one to three chunks
FILLER = ", ".join(["a wooden chair"] * 22)  # 66 tokens
EMPHASIS_CASES = [
    ("a (red:1.4) car", 1), ("a (red:1.4) car", 2), ("a (red:1.4) car", 3),
    (f"(red:1.4) car, {FILLER}, a [blue] sky BREAK a green field", 1),
    (f"a car, {FILLER} BREAK a (green:0.6) field", 1), (f"a car, {FILLER} BREAK a (green:0.6) field", 3),
    (f"((cat)), {FILLER}, {FILLER}", 2), ("a cat BREAK a dog BREAK a (bird:1.8)", 3),
    ("a car", 2),
]


@pytest.mark.parametrize("prompt,min_chunks", EMPHASIS_CASES)
def test_emphasis_is_normalised_per_chunk_as_the_webui_does(tokenizer, text_encoder, prompt, min_chunks):
    """A1111 and Forge ("Original" emphasis) scale each token's vector by its weight, then restore the mean of
    each 77-token chunk alone (``sd_hijack_clip`` encodes chunk by chunk). The oracle: each chunk encoded on its own
    and normalised on its own; the padding chunks are the empty prompt's. Before, the mean was taken over all the
    prompt's chunks, padding included: an edit's source padded to its edit's length was another conditioning."""
    import torch

    with torch.no_grad():
        z, n = parse.encode(text_encoder, tokenizer, prompt, min_chunks=min_chunks)
        chunks = parse.chunk_tokens(tokenizer, parse.parse(prompt).pieces)
        chunks += parse.chunk_tokens(tokenizer, [("", 1.0)]) * (min_chunks - len(chunks))
        assert n == len(chunks) == max(min_chunks, n) and z.shape[1] == 77 * n
        # CLIP encodes each chunk's row on its own (one batch here, so the float rounding is the same as encode's)
        plain = text_encoder(torch.tensor([c.ids for c in chunks])).last_hidden_state
        for i, chunk in enumerate(chunks):
            zi, w = plain[i], torch.tensor(chunk.weights)[:, None]
            want = zi * w * (zi.mean() / (zi * w).mean()) if bool((w != 1).any()) else zi
            assert torch.allclose(z[0, 77 * i:77 * (i + 1)], want, atol=1e-5, rtol=1e-4), f"chunk {i}"


def test_processes_sharing_a_data_folder_write_the_tokenizer_files_at_once(tmp_path):
    """Several ``serve`` of a cluster start together on one shared folder: each writes the tokenizer cache at once
    (here: processes started together, each writing into the same empty folder); none fails and the files are
    whole."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    folder = tmp_path / "clip-tokenizer"
    code = ("import sys; from pathlib import Path; from lib_profile.prompts.tokenizer import write_tokenizer_files; "
            "write_tokenizer_files(Path(sys.argv[1]))")
    for _ in range(3):
        procs = [subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=root, stderr=subprocess.PIPE,
                                  text=True) for _ in range(6)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), [e[-500:] for e in errors if e]
        assert not list(folder.glob(".partial*"))
        assert load_tokenizer(str(folder))("a photo").input_ids[:2] == [49406, 320]
        for f in folder.iterdir():
            f.unlink()
