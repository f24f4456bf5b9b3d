"""Prompts the way the WebUI reads them: emphasis weights, extra-network tags, 75-token chunks.

``(word)`` x1.1, ``[word]`` /1.1, ``(word:1.3)`` explicit, ``\\(`` literal; ``BREAK`` starts a new
chunk; ``<lora:name:w>`` style tags are pulled out (a host applies them as LoRAs). Long prompts
become several 77-token CLIP chunks whose encodings are concatenated, as in the WebUI, so nothing
past token 75 is silently dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lib_profile.hosts.base import LoraRef

CHUNK = 75

_ATTENTION = re.compile(
    r"""
\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:
""",
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_TAG = re.compile(r"<(\w+):([^>]+)>")


@dataclass
class ExtraNetwork:
    kind: str  # "lora", "lyco", "hypernet", ...
    name: str
    weight: float = 1.0


@dataclass
class ParsedPrompt:
    text: str  # the prompt without extra-network tags
    pieces: list[tuple[str, float]]  # (text, weight); ("BREAK", -1) marks a chunk break
    networks: list[ExtraNetwork] = field(default_factory=list)


def extract_networks(prompt: str) -> tuple[str, list[ExtraNetwork]]:
    """Remove ``<kind:name[:weight...]>`` tags; return the clean text and the tags found."""
    found: list[ExtraNetwork] = []

    def take(m: re.Match) -> str:
        parts = m[2].split(":")
        weight = 1.0
        if len(parts) > 1:
            try:
                weight = float(parts[1])
            except ValueError:
                weight = 1.0
        found.append(ExtraNetwork(m[1].lower(), parts[0], weight))
        return ""

    return _TAG.sub(take, prompt), found


def parse_attention(text: str) -> list[tuple[str, float]]:
    """The WebUI's emphasis grammar: a list of (text, weight) with equal neighbours merged."""
    res: list[list] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for p in range(start, len(res)):
            res[p][1] *= factor

    for m in _ATTENTION.finditer(text):
        tok, weight = m.group(0), m.group(1)
        if tok.startswith("\\"):
            res.append([tok[1:], 1.0])
        elif tok == "(":
            round_brackets.append(len(res))
        elif tok == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            multiply(round_brackets.pop(), float(weight))
        elif tok == ")" and round_brackets:
            multiply(round_brackets.pop(), 1.1)
        elif tok == "]" and square_brackets:
            multiply(square_brackets.pop(), 1 / 1.1)
        else:
            for i, part in enumerate(_BREAK.split(tok)):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])
    for pos in round_brackets:
        multiply(pos, 1.1)
    for pos in square_brackets:
        multiply(pos, 1 / 1.1)
    if not res:
        res = [["", 1.0]]
    merged: list[list] = []
    for text_, w in res:
        if merged and merged[-1][1] == w and w != -1:
            merged[-1][0] += text_
        else:
            merged.append([text_, w])
    return [(t, w) for t, w in merged]


def parse(prompt: str) -> ParsedPrompt:
    text, networks = extract_networks(prompt)
    return ParsedPrompt(text=text, pieces=parse_attention(text), networks=networks)


@dataclass
class Chunk:
    ids: list[int]  # 77 ids: BOS, 75 tokens (padded), EOS
    weights: list[float]  # 77 weights, 1.0 at BOS/EOS/padding
    words: list[int]  # 77 entries: index into ParsedPrompt.pieces per token, -1 for BOS/EOS/padding


def chunk_tokens(tokenizer, pieces: list[tuple[str, float]]) -> list[Chunk]:
    """Tokenise weighted pieces into 77-token chunks (BOS + 75 + EOS), padding with EOS like SD1."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    chunks: list[Chunk] = []
    ids: list[int] = []
    weights: list[float] = []
    owners: list[int] = []

    def close() -> None:
        nonlocal ids, weights, owners
        fill = CHUNK - len(ids)
        chunks.append(Chunk([bos] + ids + [pad] * fill + [eos],
                            [1.0] + weights + [1.0] * (fill + 1),
                            [-1] + owners + [-1] * (fill + 1)))
        ids, weights, owners = [], [], []

    for index, (text, weight) in enumerate(pieces):
        if weight == -1:  # BREAK
            close()
            continue
        for token in tokenizer(text, add_special_tokens=False, truncation=False).input_ids:
            if len(ids) == CHUNK:
                close()
            ids.append(token)
            weights.append(weight)
            owners.append(index)
    if ids or not chunks:
        close()
    return chunks


def chunk_count(tokenizer, prompt: str) -> int:
    """How many 77-token CLIP chunks the prompt is encoded in."""
    return len(chunk_tokens(tokenizer, parse(prompt).pieces))


def token_count(tokenizer, prompt: str) -> int:
    """How many CLIP tokens a prompt uses (tags removed), as the WebUI's counter shows."""
    parsed = parse(prompt)
    return sum(len(tokenizer(t, add_special_tokens=False, truncation=False).input_ids)
               for t, w in parsed.pieces if w != -1)


def padded_chunks(tokenizer, prompt: str, min_chunks: int = 1) -> list[Chunk]:
    """The prompt's 77-token chunks (:func:`chunk_tokens`), padded with empty chunks to ``min_chunks``."""
    chunks = chunk_tokens(tokenizer, parse(prompt).pieces)
    empty = chunk_tokens(tokenizer, [("", 1.0)])[0]
    return chunks + [empty] * (min_chunks - len(chunks))


def emphasize(z, chunks: list[Chunk]):
    """The WebUI's "Original" emphasis on hidden states ``z`` (chunks, 77, hidden) of ``chunks``: each token's vector
    scaled by its weight, then each chunk's mean restored -> (1, 77 * chunks, hidden)."""
    import torch

    weights = torch.tensor([c.weights for c in chunks], device=z.device, dtype=z.dtype)
    parts = []
    for i in range(len(chunks)):
        # the WebUI ("Original" emphasis, sd_emphasis.py) scales each token's vector, then restores the mean of
        # that 77-token chunk alone: a chunk's conditioning does not depend on the other chunks, nor on the
        # empty chunks that pad a prompt to its negative prompt's length (or an edit's source to its edit's)
        zi, wi = z[i], weights[i]
        if bool((wi != 1.0).any()):
            original_mean = zi.mean()
            zi = zi * wi.unsqueeze(-1)
            new_mean = zi.mean()
            if new_mean.abs() > 1e-4 * zi.abs().mean():  # a mean near 0 (tiny random models) would blow up
                zi = zi * (original_mean / new_mean)
        parts.append(zi)
    return torch.cat(parts)[None]


def encode(text_encoder, tokenizer, prompt: str, clip_skip: int = 1, min_chunks: int = 1):
    """Prompt -> (1, 77 * chunks, hidden) conditioning, with the WebUI's emphasis and CLIP skip."""
    import torch

    chunks = padded_chunks(tokenizer, prompt, min_chunks)
    ids = torch.tensor([c.ids for c in chunks], device=text_encoder.device)
    out = text_encoder(ids, output_hidden_states=clip_skip > 1)
    if clip_skip > 1:
        z = text_encoder.text_model.final_layer_norm(out.hidden_states[-clip_skip])
    else:
        z = out.last_hidden_state
    return emphasize(z, chunks), len(chunks)


def lora_tags(prompt: str, loras: list[LoraRef]) -> str:
    """The prompt with ``<lora:stem:weight>`` for each LoRA not already tagged in it."""
    out = prompt
    for lora in loras:
        if f"<lora:{lora.name}:" in out:
            continue
        tag = f"<lora:{lora.name}:{lora.weight:g}>"
        out = f"{out}, {tag}" if out else tag
    return out
