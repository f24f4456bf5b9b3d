"""Whole words: explain's words, re-weight and local-blend words and the swap shortcut name only whole words of the
prompt, case-insensitively, every place of a repeated word or with ``word#n`` its n-th. Checked against an oracle
written plainly here (the prompt built from known words, each word tokenised alone, positions counted), on many
random prompts: words that are prefixes and suffixes of others, words of several tokens, words across the 75-token
chunk boundary and after BREAK, with emphasis, LoRA tags, commas, digits, ``_`` and accents."""

from __future__ import annotations

import random
import re

import pytest

from lib_profile.attention.daam import TokenMap
from lib_profile.attention.explain import tokenizer
from lib_profile.hosts.base import HostError

WORDS = ["hair", "hairband", "chair", "armchair", "head", "headscarf", "forehead", "redhead", "red", "photo",
         "photorealistic", "telephoto", "photography", "scarf", "woman", "portrait", "light", "lighting",
         "multicoloured", "café", "8k", "1990s", "photo2", "hair_band", "blue", "studio", "ohwx", "hair-band"]
ASKED = WORDS + ["hai", "band", "ead", "k", "8", "s", "caf", "photoreal", "lights", "multi", "coloured", "scar"]
DECOS = ["{}", "{}", "{}", "{},", "({}:1.2)", "({})", "[{}]", "({}:0.8),"]
UNIT = re.compile(r"[^\W_]+|(?:[^\w\s]|_)+")  # a word: letters and digits; else a run of punctuation


class Oracle:
    """A prompt built from known words, with each word's (and comma's) token positions counted the plain way:
    each unit tokenised alone, 75 tokens a chunk (BOS first, so chunk c's i-th token is at 77 c + 1 + i), BREAK
    starting a new chunk, LoRA tags and emphasis syntax giving no tokens."""

    def __init__(self, rng: random.Random, tok):
        self.text, self.units = "", []  # units: (text, is a word, (start, end) in text, flat token indices)
        self.places: list[tuple[int, int]] = []  # flat token index -> (chunk, index in chunk)
        chunk, used = 0, 0
        for i in range(rng.randint(1, 70)):
            if i and rng.random() < 0.05:
                self.text += "BREAK "
                chunk, used = chunk + 1, 0
            if rng.random() < 0.05:
                self.text += f"<lora:{rng.choice(WORDS)}:0.8> "
            word = rng.choice([str.lower, str.title, str.upper, str.lower])(rng.choice(WORDS))
            deco = rng.choice(DECOS)
            begin = len(self.text)
            start, end = begin + deco.index("{}"), begin + len(deco.format(word))  # the word; the segment
            sep = rng.choice([" ", "  "] + ([] if deco.endswith(",") else [", "]))
            self.text += deco.format(word) + sep
            spans = [(start + m.start(), start + m.end()) for m in UNIT.finditer(word)]
            if deco.endswith(","):
                spans.append((end - 1, end))
            if sep == ", ":
                spans.append((end, end + 1))
            for a, b in spans:
                flat = []
                for _t in tok.tokenize(self.text[a:b]):
                    if used == 75:
                        chunk, used = chunk + 1, 0
                    flat.append(len(self.places))
                    self.places.append((chunk, used))
                    used += 1
                self.units.append((self.text[a:b], self.text[a:b][0].isalnum(), (a, b), flat))

    def find(self, query: str, plain: bool = False) -> list[int]:
        """The units where the units of ``query`` (its words and punctuation) stand in a row (``plain``: with only
        whitespace or nothing between them in the text, no emphasis, tag or BREAK)."""
        asked = UNIT.findall(query.lower())
        return [i for i in range(len(self.units) - len(asked) + 1)
                if all(self.units[i + k][0].lower() == w for k, w in enumerate(asked))
                and not (plain and any(self.text[self.units[i + k][2][1]:self.units[i + k + 1][2][0]].strip()
                                       for k in range(len(asked) - 1)))]

    def expected(self, query: str, n=None, position=None, plain=False):
        """(positions, None) or (None, why it is refused): ``position`` maps a flat token index to its position."""
        position = position or (lambda flat: self.places[flat][0] * 77 + 1 + self.places[flat][1])
        found = self.find(query, plain)
        if not found:
            return None, "not in the prompt"
        if n is not None and n > len(found):
            return None, "once" if len(found) == 1 else f"{len(found)} times"
        chosen = found if n is None else [found[n - 1]]
        width = len(UNIT.findall(query))
        return [position(f) for i in chosen for u in self.units[i:i + width] for f in u[3]], None

    def replaced(self, query: str, new: str, n=None) -> str:
        """The prompt with the places of ``query`` written plainly (all, or the n-th) replaced by ``new``."""
        found, width = self.find(query, plain=True), len(UNIT.findall(query))
        text = self.text
        for i in reversed(found if n is None else [found[n - 1]]):
            a, b = self.units[i][2][0], self.units[i + width - 1][2][1]
            text = text[:a] + new + text[b:]
        return text


def queries(rng: random.Random, oracle: Oracle):
    """Words asked for: any word of the list or a part of one, a phrase of the prompt, sometimes with ``#n``."""
    out = []
    for _ in range(6):
        if rng.random() < 0.7:
            text = rng.choice(ASKED)
        else:
            pairs = [i for i in range(len(oracle.units) - 1) if oracle.units[i][1] and oracle.units[i + 1][1]]
            if not pairs:
                continue
            i = rng.choice(pairs)
            text = f"{oracle.units[i][0]} {oracle.units[i + 1][0]}"
        n = rng.choice([None, None, 1, 2, 3, 5])
        out.append((text, n))
    return out


def cases(count: int, seed: int = 17):
    rng, tok = random.Random(seed), tokenizer()
    for _ in range(count):
        oracle = Oracle(rng, tok)
        yield oracle, queries(rng, oracle)


def check(tokens: TokenMap, oracle: Oracle, text: str, n, position=None) -> None:
    asked = text if n is None else f"{text}#{n}"
    want, why = oracle.expected(text, n, position)
    if want is None:
        with pytest.raises(HostError, match=why):
            tokens.positions(tokenizer(), asked)
    else:
        assert tokens.positions(tokenizer(), asked) == want, (oracle.text, asked)


def test_the_oracle_counts_what_the_encoder_sees():
    """The oracle's own footing: its token count per chunk is the prompt's (so a long prompt does cross chunks)."""
    from lib_profile.prompts import parse as prompts

    long = 0
    for oracle, _q in cases(60):
        chunks = prompts.chunk_tokens(tokenizer(), prompts.parse(oracle.text).pieces)
        real = [(c, i - 1) for c, chunk in enumerate(chunks) for i, owner in enumerate(chunk.words) if owner >= 0]
        assert real == oracle.places, oracle.text
        long += len(chunks) > 1
    assert long >= 10


def test_words_are_found_whole_as_the_oracle_says():
    asked = refused = 0
    for oracle, qs in cases(300):
        tokens = TokenMap.from_prompt(tokenizer(), oracle.text)
        for text, n in qs:
            check(tokens, oracle, text, n)
            asked += 1
            refused += oracle.expected(text, n)[0] is None
    assert asked > 1500 and 0.2 < refused / asked < 0.8  # both kinds, many times


@pytest.mark.parametrize("prompt,word,found", [
    ("a woman with a hairband", "hair", None),
    ("a woman with a hairband, red hair", "hair", [9]),
    ("a woman in a headscarf", "head", None),
    ("a redhead woman", "red", None),
    ("a redhead woman", "head", None),
    ("a redhead woman, red scarf", "red", [5]),
    ("a photorealistic telephoto photo", "photo", [6]),
    ("woman sitting on a chair", "hair", None),
    ("a woman, (Hair:1.2), HAIR band", "hair", [4, 6]),
    ("a woman, (Hair:1.2), HAIR band", "hair#2", [6]),
    ("a woman, (Hair:1.2), HAIR band", "hair#3", None),
    ("a woman, (Hair:1.2), HAIR band", "hair band", [6, 7]),
    ("8k photo of a woman", "k", None),
    ("photo1 of a woman", "photo", None),
    ("hair_band, woman", "hair", [1]),
    ("a café", "caf", None),
    ("a café", "CAFÉ", [2]),
])
def test_a_table_of_whole_and_part_words(prompt, word, found):
    tok = tokenizer()
    tokens = TokenMap.from_prompt(tok, prompt)
    if found is None:
        with pytest.raises(HostError, match="not in the prompt|times"):
            tokens.positions(tok, word)
    else:
        assert tokens.positions(tok, word) == found


def test_a_part_word_and_a_missing_place_say_why_and_list_the_words():
    tok = tokenizer()
    tokens = TokenMap.from_prompt(tok, "a woman with a hairband, red hair, <lora:x:1> hair")
    with pytest.raises(HostError) as e:
        tokens.positions(tok, "band")
    assert "not in the prompt as a whole word (it is only part of hairband)" in str(e.value)
    assert "its words are: a, woman, with, hairband, red, hair" in str(e.value)
    with pytest.raises(HostError, match=r"'hair' is in the prompt 2 times; ask for hair#1 to hair#2"):
        tokens.positions(tok, "hair#5")
    with pytest.raises(HostError, match="count from 1"):
        tokens.positions(tok, "hair#0")


def test_the_swap_shortcut_replaces_the_words_the_lookup_finds():
    """``replace`` (Studio.edit) acts on the prompt's text: it replaces exactly the places the lookup finds (the
    oracle's spans) and refuses what the lookup refuses - but for a phrase split by emphasis, a tag or BREAK
    ("(red:1.2) scarf"), which the lookup finds and a text swap cannot replace whole: it is not a place of it."""
    from lib_profile.attention.words import replace_words

    done = 0
    for oracle, qs in cases(150, seed=5):
        tokens = TokenMap.from_prompt(tokenizer(), oracle.text)
        for text, n in qs:
            asked = text if n is None else f"{text}#{n}"
            want, why = oracle.expected(text, n, plain=True)
            if want is None:
                with pytest.raises(HostError, match="not in the prompt" if why == "not in the prompt" else why):
                    replace_words(oracle.text, {asked: "zzz"}, tokens.words())
            else:
                assert replace_words(oracle.text, {asked: "zzz"}) == oracle.replaced(text, "zzz", n), \
                    (oracle.text, asked)
                done += 1
    assert done > 200


@pytest.mark.parametrize("prompt,replace,target", [
    ("a Red scarf, red_hat, redhead", {"red": "blue"}, "a blue scarf, blue_hat, redhead"),
    ("red scarf, red hat", {"red#2": "blue"}, "red scarf, blue hat"),
    ("hair, hairband (hair:1.2)", {"hair": "fur"}, "fur, hairband (fur:1.2)"),
    ("<lora:red:0.8> red BREAK red", {"red": "blue"}, "<lora:red:0.8> blue BREAK blue"),
    ("a café, cafés", {"café": "bar"}, "a bar, cafés"),
    ("hair, then hair.", {"hair,": "fur,"}, "fur, then hair."),
    ("red  scarf", {"red scarf": "blue coat"}, "blue coat"),
    ("a \\1 b", {"b": "\\1"}, "a \\1 \\1"),
])
def test_the_swap_shortcut_table(prompt, replace, target):
    from lib_profile.attention.words import replace_words

    assert replace_words(prompt, replace) == target


def test_break_is_not_a_word_to_replace():
    from lib_profile.attention.words import replace_words

    with pytest.raises(HostError, match="not in the prompt"):
        replace_words("red BREAK blue", {"break": "x"})


# -- the WebUI's own chunks (A1111 and Forge stand-ins): positions read from the host's tokenize_line

try:
    from test_webui_host import both, webui  # noqa: F401 (the fixture)
except ImportError:
    from tests.test_webui_host import both, webui  # noqa: F401


class _Chunk:
    def __init__(self, tokens):
        self.tokens = tokens


class _TextEngine:
    """The WebUI's ``tokenize_line`` as A1111 writes it: the emphasis pieces tokenised, 75 tokens a chunk, BREAK
    closing one, and a chunk that is full moving the words after its last comma (within 20 tokens) to the next."""

    def tokenize_line(self, text):
        from lib_profile.prompts.parse import parse_attention

        tok = tokenizer()
        comma = tok.convert_tokens_to_ids(",</w>")
        chunks, chunk, last_comma = [], [], -1

        def next_chunk():
            nonlocal chunk, last_comma
            chunks.append(_Chunk([tok.bos_token_id, *chunk, *[tok.eos_token_id] * (76 - len(chunk))]))
            chunk, last_comma = [], -1

        for piece, weight in parse_attention(text):
            if weight == -1:
                next_chunk()
                continue
            for token in tok(piece, add_special_tokens=False)["input_ids"]:
                if token == comma:
                    last_comma = len(chunk)
                elif len(chunk) == 75 and last_comma != -1 and len(chunk) - last_comma <= 20:
                    moved, chunk = chunk[last_comma + 1:], chunk[:last_comma + 1]
                    next_chunk()
                    chunk = moved
                if len(chunk) == 75:
                    next_chunk()
                chunk.append(token)
        if chunk or not chunks:
            next_chunk()
        return chunks, sum(len(c.tokens) for c in chunks)


@both()
def test_words_are_found_whole_in_the_webuis_own_chunks(webui):
    import types

    modules, host = webui
    engine = _TextEngine()
    if host.name == "forge":
        modules.shared.sd_model = types.SimpleNamespace(text_processing_engine=engine)
    else:
        modules.shared.sd_model = types.SimpleNamespace(cond_stage_model=engine)
    special = {tokenizer().bos_token_id, tokenizer().eos_token_id}
    moved = 0
    for oracle, qs in cases(120, seed=29):
        chunks = host.token_chunks(oracle.text)
        real = [c * 77 + i for c, ids in enumerate(chunks) for i, t in enumerate(ids) if t not in special]
        moved += any(c * 77 + 1 + i != p for (c, i), p in zip(oracle.places, real))  # comma backtracking at work
        tokens = TokenMap.for_host(host, tokenizer(), oracle.text)
        for text, n in qs:
            check(tokens, oracle, text, n, position=real.__getitem__)
    assert moved >= 3


# -- where users meet it: the API refuses at the request (400), not in the job



def test_the_api_refuses_part_words_and_missing_places_at_the_request(api, studio):
    studio.create_identity("Wren", "woman")
    prompt = "photo of a woman with a hairband, Red scarf, red_hat"
    new = {"identity": "wren", "prompt": prompt, "seed": 1}
    for body, message in [
        ({"words": ["band"]}, "'band' is not in the prompt as a whole word (it is only part of hairband)"),
        ({"words": ["hair"]}, "not in the prompt"),
        ({"words": ["red#3"]}, "'red' is in the prompt 2 times; ask for red#1 to red#2"),
    ]:
        bad = api.post("/explain", json={**new, **body})
        assert bad.status_code == 400 and message in bad.json()["detail"], bad.text
        if "#" not in body["words"][0]:
            assert "its words are: photo, of, a, woman, with, hairband, red, scarf, hat" in bad.json()["detail"]
    for body, message in [
        ({"replace": {"hair": "fur"}}, "'hair' is not in the prompt: photo of a woman with a hairband"),
        ({"replace": {"red#3": "blue"}}, "2 times"),
        ({"mode": "reweight", "weights": {"hair": 1.5}}, "'hair' is not in the prompt"),
        ({"mode": "reweight", "weights": {"scarf#2": 1.5}}, "'scarf' is in the prompt once; ask for scarf#1"),
        ({"replace": {"red": "blue"}, "blend_words": ["hair"]}, "in neither prompt"),
    ]:
        bad = api.post("/edit", json={**new, **body})
        assert bad.status_code == 400 and message in bad.json()["detail"], bad.text
    assert studio.jobs.list("wren") == []  # nothing was queued
    job = studio.edit("wren", prompt=prompt, seed=1, replace={"RED#2": "blue"}, weights={"red#1": 1.2})
    studio.jobs.cancel(job["id"])
    studio.jobs.wait(job["id"], timeout=300)
    assert job["params"]["edit"]["target"].startswith("photo of a woman with a hairband, Red scarf, blue_hat")
