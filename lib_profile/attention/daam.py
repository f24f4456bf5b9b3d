"""DAAM: which pixels each prompt word drives (Tang et al., "What the DAAM", ACL 2023).

For each cross-attention layer of the UNet's down and up blocks (optionally a layer or step range),
the prompt's attention probabilities are summed over the sampling steps per layer and head; each
per-layer, per-head map is upsampled (bicubic) to the latent size and clipped at 0, and they are
averaged. A word's map is the mean of its tokens' maps, upsampled to the image and normalised to
0..1. This is the reference ``daam`` package's aggregation, done inside our attention controller, so
it works with WebUI prompts (emphasis, LoRA tags, several 75-token chunks) on every host, and with every UNet layout
(SD1.5's 16 cross-attention layers at 4 grids, SDXL's 70 at latent/2 and latent/4: each layer's grid is read from
its query count, ``control.query_grid``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image

from lib_profile.attention.control import Call, Controller, OnDevice, Site
from lib_profile.hosts.base import HostError


@dataclass
class Token:
    position: int  # index into the conditioning's token axis (chunk * 77 + place in chunk)
    text: str  # the token without its end-of-word marker
    piece: int  # which prompt piece it came from
    ends_word: bool = True  # CLIP's end of word (``</w>``)
    starts_word: bool = True  # a word of the prompt starts here (see ``words``)
    id: int = -1


class TokenMap:
    """Where each word of a prompt sits on the conditioning's token axis, read the way the host encodes."""

    def __init__(self, tokens: list[Token], chunks: int, tokenizer=None):
        self.tokens = tokens
        self.chunks = chunks
        self.tokenizer = tokenizer

    @classmethod
    def from_prompt(cls, tokenizer, prompt: str) -> "TokenMap":
        from lib_profile.attention.words import word_starts
        from lib_profile.prompts import parse as prompts

        parsed = prompts.parse(prompt)
        chunks = prompts.chunk_tokens(tokenizer, parsed.pieces)
        starts = {}  # piece -> where its words start, per token
        for index, (text, weight) in enumerate(parsed.pieces):
            if weight != -1:
                raw = tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False).input_ids)
                starts[index] = word_starts(tokenizer, text, raw)
        tokens, seen = [], {}
        for c, chunk in enumerate(chunks):
            for p, (token_id, owner) in enumerate(zip(chunk.ids, chunk.words)):
                if owner >= 0:
                    raw = tokenizer.convert_ids_to_tokens(token_id)
                    k = seen[owner] = seen.get(owner, -1) + 1
                    tokens.append(Token(c * 77 + p, raw.replace("</w>", ""), owner, raw.endswith("</w>"),
                                        starts[owner][k], int(token_id)))
        return cls(tokens, len(chunks), tokenizer)

    @classmethod
    def from_chunks(cls, tokenizer, chunks: list[list[int]], prompt: Optional[str] = None) -> "TokenMap":
        """From a host's own 77-id chunks (BOS, tokens, EOS/padding). With the ``prompt`` they were made of, where
        its words start is read from its text when the host's tokens are ours; else from CLIP's word ends."""
        special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
        tokens = []
        for c, ids in enumerate(chunks):
            for p, token_id in enumerate(ids):
                if token_id not in special:
                    raw = tokenizer.convert_ids_to_tokens(int(token_id))
                    starts = not tokens or tokens[-1].ends_word
                    tokens.append(Token(c * 77 + p, raw.replace("</w>", ""), -1, raw.endswith("</w>"), starts,
                                        int(token_id)))
        if prompt is not None:
            ours = cls.from_prompt(tokenizer, prompt).tokens
            if [t.id for t in ours] == [t.id for t in tokens]:
                for mine, host in zip(ours, tokens):
                    host.starts_word = mine.starts_word
        return cls(tokens, len(chunks), tokenizer)

    @classmethod
    def for_host(cls, host, tokenizer, prompt: str) -> "TokenMap":
        """The host's own tokenisation when it has one (the WebUI), else ours (the same as the diffusers host)."""
        chunks = host.token_chunks(prompt)
        return cls.from_chunks(tokenizer, chunks, prompt) if chunks else cls.from_prompt(tokenizer, prompt)

    def word_groups(self) -> list[tuple[str, list[int]]]:
        """(CLIP word, its token positions) in prompt order; sub-word pieces glued back into their word."""
        out, current, positions = [], "", []
        for i, token in enumerate(self.tokens):
            current += token.text
            positions.append(token.position)
            if token.ends_word or i + 1 == len(self.tokens):
                out.append((current, positions))
                current, positions = "", []
        return out

    def words(self) -> list[str]:
        """The prompt's distinct words (what one can ask a map of), as they read: "photo1" is one word, "," none."""
        groups: list[list[Token]] = []
        for token in self.tokens:
            if token.starts_word or not groups:
                groups.append([])
            groups[-1].append(token)
        out = []
        for group in groups:
            pieces, word = [], []
            for token in group:  # decoded per CLIP word (bytes of one character may span tokens)
                word.append(token.text + ("</w>" if token.ends_word else ""))
                if token.ends_word or token is group[-1]:
                    pieces.append(self._decode(word))
                    word = []
            out.append("".join(pieces))
        return list(dict.fromkeys(w for w in out if any(ch.isalnum() for ch in w)))

    def _decode(self, raw: list[str]) -> str:
        if self.tokenizer is None:
            return "".join(t.replace("</w>", "") for t in raw)
        return self.tokenizer.convert_tokens_to_string(raw).replace(" ", "")

    def places(self, tokenizer, text: str) -> list[list[int]]:
        """The token positions of each whole-word place of ``text`` (a word or phrase), in prompt order."""
        from lib_profile.attention.words import find, query_tokens

        wanted, starts = query_tokens(tokenizer, text)
        return find(self.tokens, wanted, starts) if wanted else []

    def positions(self, tokenizer, word: str) -> list[int]:
        """Token positions of ``word`` (one or more whole words, several tokens each): of all its places, or with
        ``word#n`` of its n-th place; a HostError listing the prompt's words when it is not one of them."""
        from lib_profile.attention.words import parse_query, pick

        text, n = parse_query(word)
        if not tokenizer.tokenize(text.lower()):
            raise HostError("Choose a word of the prompt")
        places = self.places(tokenizer, text)
        if not places:
            inside = [w for w in self.words() if text.lower() in w.lower() and text.lower() != w.lower()]
            hint = f" as a whole word (it is only part of {', '.join(inside)})" if inside else ""
            raise HostError(f"{word!r} is not in the prompt{hint}; its words are: {', '.join(self.words())}")
        return [p for place in pick(word, text, places, n) for p in place]


def check_range(name: str, pair: Optional[tuple[int, int]]) -> Optional[tuple[int, int]]:
    """``pair`` as a (first, last) range of 0-based indices, or a HostError saying how to write one."""
    if pair is None:
        return None
    if len(pair) != 2 or not 0 <= int(pair[0]) <= int(pair[1]):
        raise HostError(f"{name} must be [first, last] with 0 <= first <= last (0-based), not {list(pair)}")
    return int(pair[0]), int(pair[1])


class DaamRecorder(Controller):
    """Records cross-attention for word maps. ``positions``: the token positions to keep (None: all);
    ``layers``: (first, last) index among the recorded cross-attention layers; ``steps``: (first, last)
    sampling step; ``places``: UNet parts (the paper: down and up blocks); ``image``: which image of
    the batch (under classifier-free guidance, its prompt half); ``sampling_pass``: which sampling pass of
    the generation (0: the first; 1: the hires fix pass).

    A step's queries and keys are kept (references, no copy) until the next step's first read (or the maps are
    asked for); then the probabilities of all its layers of one shape are computed and summed in one go - a few
    operations a step instead of several a layer, which is what a generation bound by GPU launches pays for."""

    #: most bytes of float32 attention logits computed at once (layers of one shape are split to stay below)
    group_bytes = 128 * 2 ** 20

    def __init__(self, positions: Optional[list[int]] = None, layers: Optional[tuple[int, int]] = None,
                 steps: Optional[tuple[int, int]] = None, places: tuple[str, ...] = ("down", "up"), image: int = 0,
                 sampling_pass: int = 0):
        self.positions = sorted(set(positions)) if positions is not None else None
        self.layers, self.step_range = check_range("layers", layers), check_range("steps", steps)
        self.places, self.image = places, image
        self.sampling_pass = sampling_pass
        self.grids: dict[int, tuple[int, int]] = {}  # cross-layer number -> its (h, w) query grid
        self.latent_hw = (0, 0)
        self._steps = 0  # the recorded pass's sampling steps
        self._pass = -1
        self._cross_index: dict[int, int] = {}
        self._on_device = OnDevice()
        self._pending: list[tuple] = []  # this step's (layer, q, k, scale, upcast), not yet computed
        self._pending_step = -1
        self._sums: dict[tuple[int, ...], object] = {}  # layers -> (layers, heads, queries, tokens), summed over steps
        self._maps = None
        self._summed: set[tuple[int, int, int]] = set()  # (sampler step, model evaluation, layer) read

    def begin(self, steps, latent_hw):
        self._flush()
        self._pass += 1
        if self._pass == self.sampling_pass:
            self.latent_hw, self._steps = latent_hw, steps

    def _layer(self, site: Site) -> int:
        if site.index not in self._cross_index:
            self._cross_index[site.index] = len(self._cross_index)
        return self._cross_index[site.index]

    def needs_probs(self, site, step, queries):
        if not site.cross or site.place not in self.places or self._pass != self.sampling_pass:
            return False
        if self.step_range and not self.step_range[0] <= step <= self.step_range[1]:
            return False
        layer = self._layer(site)
        return not self.layers or self.layers[0] <= layer <= self.layers[1]

    def read(self, call: Call, q, k, scale, upcast=False):
        if not call.cond_rows:  # a negative-prompt-only call
            return
        if self._pending and self._pending_step != call.step:
            self._flush()
        row = call.cond_rows[self.image]
        layer = self._layer(call.site)
        self.grids[layer] = call.hw
        self._summed.add((call.step, call.evaluation, layer))
        self._pending.append((layer, q[row], k[row], float(scale), bool(upcast)))
        self._pending_step = call.step
        self._maps = None

    def probs(self, call: Call, probs):
        """Probabilities a caller computed itself: summed at once."""
        if not call.cond_rows:
            return
        layer = self._layer(call.site)
        self.grids[layer] = call.hw
        self._summed.add((call.step, call.evaluation, layer))
        self._add((layer,), self._kept(probs[call.cond_rows[self.image]][None]))
        self._maps = None

    def _kept(self, p):
        """``p`` (layers, heads, queries, keys) at the recorded token positions."""
        if self.positions is None:
            return p
        return p.index_select(3, self._on_device.get("positions", self.positions, p))

    def _add(self, layers: tuple[int, ...], p) -> None:
        import torch

        # in inference mode: sums made during a host's sampling under it (Forge) are inference tensors, and are
        # added to after it (the last step's layers are summed when the maps are read)
        with torch.inference_mode():
            if layers in self._sums:
                self._sums[layers].add_(p)
            else:
                self._sums[layers] = p.to(torch.float32, copy=True)

    def _flush(self) -> None:
        """The pending step's probabilities: per shape, the layers' logits as one batched product, one softmax,
        one pick of the kept tokens and one add to their sums."""
        import torch

        pending, self._pending = self._pending, []
        groups: dict[tuple, list] = {}
        for item in pending:
            _layer, q, k, scale, upcast = item
            groups.setdefault((tuple(q.shape), tuple(k.shape), q.dtype, scale, upcast), []).append(item)
        with torch.inference_mode():
            for (q_shape, k_shape, _dtype, scale, upcast), items in groups.items():
                heads, queries, d = q_shape
                per_layer = heads * queries * k_shape[1] * 4
                size = max(1, self.group_bytes // per_layer)
                for start in range(0, len(items), size):
                    part = items[start:start + size]
                    q = torch.stack([i[1] for i in part]).reshape(-1, queries, d)
                    k = torch.stack([i[2] for i in part]).reshape(-1, k_shape[1], d)
                    if upcast:
                        q, k = q.float(), k.float()
                    zero = self._on_device.get("zero", lambda: torch.zeros(1, 1, 1), q)  # baddbmm's input (beta=0)
                    logits = torch.baddbmm(zero, q, k.transpose(1, 2), beta=0, alpha=scale)
                    p = logits.softmax(-1).view(len(part), heads, queries, -1)
                    self._add(tuple(i[0] for i in part), self._kept(p))

    def summed(self) -> dict:
        """What the maps sum: the sampler steps (of the pass's), the model evaluations (second-order samplers make
        two a step, all are summed) and the cross-attention layers."""
        steps = sorted({s for s, _e, _l in self._summed})
        return {"steps": len(steps), "of_steps": self._steps, "first_step": steps[0] if steps else None,
                "last_step": steps[-1] if steps else None, "evaluations": len({(s, e) for s, e, _l in self._summed}),
                "layers": sorted({layer for _s, _e, layer in self._summed})}

    @property
    def raw(self) -> dict:
        """cross-layer number -> (heads, queries, tokens): its probabilities summed over the recorded steps."""
        self._flush()
        out: dict[int, object] = {}
        for layers, sums in self._sums.items():
            for i, layer in enumerate(layers):
                out[layer] = sums[i] if layer not in out else out[layer] + sums[i]
        return out

    def maps(self):
        """(tokens, latent h, latent w): the mean over layers and heads of the upsampled, clipped maps."""
        import torch.nn.functional as F

        if self._maps is not None:  # nothing read since (a read clears it): no need to gather the sums again
            return self._maps
        raw = self.raw
        if not raw:
            if self._pass < self.sampling_pass:
                raise HostError("The generation made no hires fix pass to explain (turn hires fix on)")
            if self.step_range and self.step_range[0] >= self._steps:
                raise HostError(f"steps {list(self.step_range)} are past the pass's {self._steps} sampling steps "
                                f"(0..{self._steps - 1})")
            if self.layers and self.layers[0] >= len(self._cross_index):
                raise HostError(f"layers {list(self.layers)} are past this model's {len(self._cross_index)} "
                                f"recorded cross-attention layers (0..{len(self._cross_index) - 1})")
            raise HostError("No attention was recorded (the pass made no sampling step?)")
        total, count = None, 0
        for layer, sums in raw.items():
            heads, _queries, tokens = sums.shape
            layer_maps = sums.permute(0, 2, 1).reshape(heads, tokens, *self.grids[layer])
            up = F.interpolate(layer_maps, size=self.latent_hw, mode="bicubic").clamp_(min=0)
            total = up.sum(0) if total is None else total + up.sum(0)
            count += heads
        self._maps = total / count
        return self._maps

    def word_map(self, positions: list[int], size: tuple[int, int]) -> np.ndarray:
        """A word's map at ``size`` (w, h), 0..1, from its token positions."""
        import torch.nn.functional as F

        index = [self.positions.index(p) for p in positions] if self.positions is not None else positions
        m = self.maps()[index].mean(0)[None, None]
        m = F.interpolate(m, size=(size[1], size[0]), mode="bicubic")[0, 0]
        m = (m - m.min()) / (m.max() - m.min() + 1e-8)
        return m.clamp(0, 1).cpu().numpy()


def caption_lines(text: str, width: int, largest: int = 18, smallest: int = 8, most_lines: int = 3):
    """(font, lines): ``text`` in matplotlib's DejaVu Sans, word-wrapped to ``width`` px, at the largest size that
    needs the fewest lines (at most ``most_lines``, else the smallest size with as many lines as it takes)."""
    from pathlib import Path

    import matplotlib
    from PIL import ImageFont

    path = str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")
    best = None
    for size in range(largest, smallest - 1, -1):
        font = ImageFont.truetype(path, size)
        lines: list[str] = []
        for word in text.split():
            if lines and font.getlength(f"{lines[-1]} {word}") <= width:
                lines[-1] = f"{lines[-1]} {word}"
            else:
                lines.append(word)
        fits = all(font.getlength(line) <= width for line in lines)
        if fits and len(lines) == 1:
            return font, lines
        if best is None or (fits, -len(lines)) > best[0]:
            best = ((fits, -len(lines)), font, lines)
    _key, font, lines = best
    return font, lines


def overlay(image: Image.Image, heat: np.ndarray, caption: str, alpha: float = 0.5) -> Image.Image:
    """The heat map (jet-like colours) over the image, the word as a caption below (sized to fit)."""
    from PIL import ImageDraw

    import matplotlib

    colours = (matplotlib.colormaps["jet"](heat)[..., :3] * 255).astype(np.uint8)
    base = np.asarray(image.convert("RGB").resize((heat.shape[1], heat.shape[0])), np.float32)
    mixed = (base * (1 - alpha) + colours.astype(np.float32) * alpha).clip(0, 255).astype(np.uint8)
    width, height = heat.shape[1], heat.shape[0]
    font, lines = caption_lines(caption, width - 12)
    line_height = font.size + 3
    out = Image.new("RGB", (width, height + 10 + line_height * len(lines)), "white")
    out.paste(Image.fromarray(mixed), (0, 0))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((6, height + 5 + i * line_height), line, fill="black", font=font)
    return out
