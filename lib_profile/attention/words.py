"""Whole words of a prompt: the one lookup behind explain's words, re-weight words, local-blend words and
the swap shortcut (``replace``).

A word or phrase names only whole words of the prompt, case-insensitively: its tokens are the prompt's
tokens, the token before its first one ends a word, and its last token ends one. CLIP's BPE marks where a
word ends (``</w>``), so "hair" is not found in "hairband" ("hair", "band</w>") nor "head" in "redhead"
("red", "head</w>"). CLIP also ends a "word" between letters and digits ("photo1": "photo</w>", "1</w>"); where
the prompt's text is known, such touching letters and digits count as one word, as they read. Punctuation
is its own word ("hair," is "hair" and ","). A repeated word names all its places; ``word#2`` only the second
(1-based, in prompt order).
"""

from __future__ import annotations

import re
from typing import Optional

from lib_profile.hosts.base import HostError

_NTH = re.compile(r"^(.*\S)\s*#\s*(\d+)\s*$", re.S)


def parse_query(word: str) -> tuple[str, Optional[int]]:
    """``"hair#2"`` -> ``("hair", 2)``; ``"hair"`` -> ``("hair", None)`` (every place)."""
    text = (word or "").strip()
    m = _NTH.match(text)
    if not m:
        return text, None
    n = int(m[2])
    if n < 1:
        raise HostError(f"{word!r}: places count from 1 ({m[1]}#1 is the first {m[1]!r} of the prompt)")
    return m[1], n


def pick(word: str, text: str, places: list, n: Optional[int]) -> list:
    """The ``n``-th of ``places`` (all of them when ``n`` is None), or a HostError saying how many there are."""
    if n is None:
        return places
    if n > len(places):
        times = "once" if len(places) == 1 else f"{len(places)} times"
        raise HostError(f"{word!r}: {text!r} is in the prompt {times}; ask for {text}#1"
                        + (f" to {text}#{len(places)}" if len(places) > 1 else "") + f", or {text!r} for every place")
    return [places[n - 1]]


def word_starts(tokenizer, text: str, raw: list[str]) -> list[bool]:
    """For ``raw``, the tokens of ``text``: whether each starts a word of the text. A token starts a word when the
    one before it ends a CLIP word (``</w>``) and the two do not touch letter or digit to letter or digit in the
    text (CLIP splits "photo1" and "4k" into words that read as one). Read per whitespace-separated part; if that
    does not give ``raw`` back (a tokenizer that reads across spaces), CLIP's word ends alone."""
    plain = [i == 0 or raw[i - 1].endswith("</w>") for i in range(len(raw))]
    starts: list[bool] = []
    for part in text.split():
        tokens = tokenizer.tokenize(part)
        last = ""  # the text of the part's previous CLIP word
        word: list[str] = []
        for i, token in enumerate(tokens):
            if i == 0:
                starts.append(True)
            elif not tokens[i - 1].endswith("</w>"):
                starts.append(False)
            else:
                first = tokenizer.convert_tokens_to_string(_until_word_end(tokens, i))
                starts.append(not (last[-1:].isalnum() and first[:1].isalnum()))
            word.append(token)
            if token.endswith("</w>"):
                last, word = tokenizer.convert_tokens_to_string(word), []
    return starts if len(starts) == len(raw) and [t for p in text.split() for t in tokenizer.tokenize(p)] == raw \
        else plain


def _until_word_end(tokens: list[str], i: int) -> list[str]:
    out = []
    for token in tokens[i:]:
        out.append(token)
        if token.endswith("</w>"):
            break
    return out


def query_tokens(tokenizer, text: str) -> tuple[list[tuple[str, bool]], list[bool]]:
    """The (token text, ends a word) of a word or phrase asked for, and where its words start."""
    raw = tokenizer.tokenize(text.lower())
    return [(t.replace("</w>", ""), t.endswith("</w>")) for t in raw], word_starts(tokenizer, text.lower(), raw)


def find(tokens: list, wanted: list[tuple[str, bool]], starts: list[bool]) -> list[list[int]]:
    """Each place (in order) where ``wanted`` lies on ``tokens`` (``daam.Token`` s) as whole words: its list of
    token positions."""
    n = len(wanted)
    found = []
    for i in range(len(tokens) - n + 1):
        run = tokens[i:i + n]
        if [(t.text, t.ends_word) for t in run] != wanted or not run[0].starts_word:
            continue
        if i + n < len(tokens) and not tokens[i + n].starts_word:
            continue  # the last token ends a CLIP word that goes on (photo1)
        if any(t.starts_word != s for t, s in zip(run[1:], starts[1:])):
            continue  # "4 k" is not "4k"
        found.append([t.position for t in run])
    return found


# -- the swap shortcut: the same whole words, in the prompt's text

_ALNUM_BEFORE, _ALNUM_AFTER = r"(?<![^\W_])", r"(?![^\W_])"  # no letter or digit just before / after


def text_places(prompt: str, text: str) -> list[tuple[int, int]]:
    """(start, end) of each whole-word place of ``text`` in ``prompt``, case-insensitive, as the token lookup reads
    words: letters and digits that touch are one word, punctuation and ``_`` are not part of one, any whitespace
    matches any whitespace; extra-network tags (``<lora:...>``), emphasis weights (``:1.2)``) and the ``BREAK``
    keyword are not prompt words."""
    parts = text.split()
    if not parts:
        return []
    pattern = r"\s+".join(re.escape(p) for p in parts)
    pattern = (_ALNUM_BEFORE if parts[0][0].isalnum() else "") + pattern + \
        (_ALNUM_AFTER if parts[-1][-1].isalnum() else "")
    syntax = _syntax(prompt)
    return [m.span() for m in re.finditer(pattern, prompt, re.I)
            if not any(a < m.end() and m.start() < b for a, b in syntax)]


def _syntax(prompt: str) -> list[tuple[int, int]]:
    """Spans of ``prompt`` that are WebUI syntax, not words: extra-network tags, emphasis weights, BREAK."""
    from lib_profile.prompts.parse import _ATTENTION, _TAG

    spans = [m.span() for m in _TAG.finditer(prompt)]
    plain = _TAG.sub(lambda m: " " * len(m[0]), prompt)  # the tags' places kept
    depth = 0
    for m in _ATTENTION.finditer(plain):  # as ``parse_attention`` reads it
        if m[0] == "(":
            depth += 1
        elif depth and (m[1] is not None or m[0] == ")"):
            depth -= 1
            if m[1] is not None:
                spans.append(m.span())
    return spans + [m.span() for m in re.finditer(r"\bBREAK\b", plain)]


def replace_words(prompt: str, replace: dict[str, str], words: Optional[list[str]] = None) -> str:
    """``prompt`` with each key's whole-word places (or its ``#n``-th) replaced by its value, in turn. ``words``:
    the prompt's words, listed when a key is not one of them."""
    target = prompt
    for old, new in replace.items():
        text, n = parse_query(old)
        places = text_places(target, text)
        if not places:
            inside = [w for w in (words or []) if text.lower() in w.lower() and text.lower() != w.lower()]
            hint = f" (as a whole word; it is only part of {', '.join(inside)})" if inside else ""
            raise HostError(f"{old!r} is not in the prompt: {prompt}{hint}")
        for start, end in reversed(pick(old, text, places, n)):
            target = target[:start] + new + target[end:]
    return target
