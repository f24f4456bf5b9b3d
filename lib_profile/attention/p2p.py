"""Prompt-to-Prompt (Hertz et al., ICLR 2023): edit an image by editing its prompt, keeping its layout.

Source and edit are made in one batch from the same initial noise (two images, one seed). While
sampling, the edit's cross-attention is replaced by the source's, mapped onto the edit's tokens, for
the first ``cross_steps`` fraction of steps (tau), and its self-attention by the source's for the first
``self_steps`` fraction, at the coarse layers (a quarter of the latent's size or less: 16x16 at 512 px on SD1.5, as in
the paper's code; 32x32 at 1024 px on SDXL, as its SDXL ports). Each replacement is linear in the probabilities, so it runs on the fused attention path
(``control.Mix``): no probability tensor is materialised. Modes:

* ``swap``: word swap (the prompts have the same words but for the swapped ones); a swapped word's
  tokens share the source word's summed attention equally (the mass is kept; see ``token_mapping``).
* ``refine``: words added or removed; the prompts' words are aligned (``align``), shared words take the
  source's maps, new words keep their own.
* ``reweight``: the prompt stays; each chosen word's map is scaled by c in [-2, 2].

``weights`` also works with swap and refine; ``blend_words`` restricts the change to where those
words attend (local blend, ``blend.LocalBlend``): after each sampler step the edit's latent is taken from the
source outside the union of the source's and the edit's masks of those words. Only the prompt half of a
classifier-free-guidance batch is touched. On SDXL each image also keeps its own prompt's pooled text vector (the
edit: the edited prompt's), which conditions the UNet beside attention (docs/attention.md, "On SDXL"). The formulas, with their sources: docs/attention.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from lib_profile.attention.blend import LocalBlend
from lib_profile.attention.control import Call, Controller, Mix, OnDevice, Site
from lib_profile.attention.daam import TokenMap
from lib_profile.hosts.base import HostError

MODES = ("swap", "refine", "reweight")


@dataclass
class Edit:
    source: str
    target: str = ""  # "" = the source (reweight)
    mode: str = "swap"
    cross_steps: float = 0.8  # tau: fraction of steps whose cross-attention comes from the source
    self_steps: float = 0.4  # fraction of steps whose (coarse) self-attention comes from the source
    weights: dict[str, float] = field(default_factory=dict)  # word -> c in [-2, 2]
    blend_words: list[str] = field(default_factory=list)
    blend_threshold: float = 0.3

    def validate(self) -> None:
        if self.mode not in MODES:
            raise HostError(f"edit mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        for name in ("cross_steps", "self_steps"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise HostError(f"{name} must be within 0..1, not {getattr(self, name)}")
        for word, c in self.weights.items():
            if not -2.0 <= float(c) <= 2.0:
                raise HostError(f"the weight of {word!r} must be within -2..2, not {c}")
        if not 0.0 < self.blend_threshold < 1.0:
            raise HostError("blend_threshold must be within (0, 1)")
        if self.mode == "reweight" and not self.weights:
            raise HostError("reweight needs at least one word weight, e.g. {\"smiling\": 1.5}")

    @property
    def edited_prompt(self) -> str:
        return self.target or self.source


def token_mapping(tokenizer, edit: Edit, length: int, tokens_of=None):
    """``(mapper, alphas)`` of an edit, on a conditioning of ``length`` tokens (77 per prompt chunk).

    ``mapper``: a (length, length) matrix, ``mapper[s, t]`` = how much of the source's attention to token s the
    edit's token t takes; the edit's mapped cross-attention is ``P_source @ mapper``. ``alphas``: (length,), 1 where
    the edit's token takes the source's (mapped) map, 0 where it keeps its own (a word a refinement adds).

    Word swap (Hertz et al., ICLR 2023, section 3.2 "Word Swap"; the reference's ``get_replacement_mapper_``):
    the prompts' words are paired in order. Words of equal token counts map one to one; otherwise each of the new
    word's tokens takes ``1 / len(new word)`` of the old word's summed attention, so every row of
    ``P_source @ mapper`` still sums to 1 and the new word gets the old word's attention mass. The tokens outside
    words (BOS, EOS, padding) follow the source's in order; where the counts differ, the last ones merge or split
    the same way, so the mass is kept there too. Raises HostError when the word counts differ.

    Refinement (section 3.2 "Adding a New Phrase"): the edit's words are aligned with the source's by :func:`align`;
    an aligned word takes its source word's map, a new word keeps its own (alpha 0, an empty mapper column). BOS and
    the prompt's EOS take the source's; every other position (padding, a later chunk's BOS/EOS) takes the source's
    at the same position, as the reference's ``get_mapper`` does. The
    reference aligns tokens, not words, with the same alignment; on edits that add or remove words both give the
    same mapper and alphas over the prompt's tokens (tested). Words, because a word is what the user edits - a token
    alignment can give a new word's first piece the map of a different source word that starts with the same
    piece - and because a WebUI prompt spans 77-token chunks, each with its own BOS and EOS."""
    import torch

    tokens_of = tokens_of or (lambda prompt: TokenMap.from_prompt(tokenizer, prompt))
    src = tokens_of(edit.source).word_groups()
    dst = tokens_of(edit.edited_prompt).word_groups()
    mapper = torch.zeros(length, length)
    alphas = torch.ones(length)
    pairs: list[tuple[list[int], list[int]]] = []
    if edit.mode == "swap":
        if len(src) != len(dst):
            raise HostError(f"A word swap keeps the number of words ({len(src)} vs {len(dst)}); "
                            "use mode 'refine' to add or remove words")
        pairs = [(s, t) for (_a, s), (_b, t) in zip(src, dst)]
    else:
        for j, i in enumerate(align([w for w, _p in src], [w for w, _p in dst])):
            if i >= 0:
                pairs.append((src[i][1], dst[j][1]))
            else:  # a new word keeps its own map
                alphas[dst[j][1]] = 0.0
    src_owned = {p for _w, ps in src for p in ps}
    dst_owned = {p for _w, ps in dst for p in ps}
    src_rest = [p for p in range(length) if p not in src_owned]
    dst_rest = [p for p in range(length) if p not in dst_owned]
    if edit.mode == "swap":
        # BOS, EOS and padding: the edit's follow the source's in order (so the prompt end lines up); the surplus
        # of the longer list merges into (or is split from) the last position of the shorter
        n = min(len(src_rest), len(dst_rest))
        pairs += [([a], [b]) for a, b in zip(src_rest[:n - 1], dst_rest[:n - 1])]
        if n:
            pairs.append((src_rest[n - 1:], dst_rest[n - 1:]))
    else:  # as the reference's ``get_mapper``: BOS and the prompt's EOS aligned, every other position itself
        src_end, dst_end = max(src_owned, default=0) + 1, max(dst_owned, default=0) + 1
        pairs += [([0], [0]), ([src_end], [dst_end])]
        pairs += [([t], [t]) for t in dst_rest if t not in (0, dst_end)]
    for s, t in pairs:
        if len(s) == len(t):
            for a, b in zip(s, t):
                mapper[a, b] = 1.0
        else:  # each of the new tokens takes an equal share of the old ones' summed attention
            for b in t:
                for a in s:
                    mapper[a, b] = 1.0 / len(t)
    return mapper, alphas


def align(source: list, target: list) -> list[int]:
    """For each item of ``target``, the index of the ``source`` item it is aligned with, or -1 (a new item).

    A global (Needleman-Wunsch) alignment with the reference's scores (``seq_aligner``: match 1, mismatch -1, gap 0;
    so a longest common subsequence), traced back from the end preferring a target item left out, then a source item
    left out, then a match - the reference's tie-breaking, so a repeated word pairs as it does there. O(n m)."""
    n, m = len(source), len(target)
    score = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diagonal = score[i - 1][j - 1] + (1 if source[i - 1] == target[j - 1] else -1)
            score[i][j] = max(score[i][j - 1], score[i - 1][j], diagonal)
    out, i, j = [-1] * m, n, m
    while i > 0 and j > 0:
        if score[i][j] == score[i][j - 1]:
            j -= 1
        elif score[i][j] == score[i - 1][j]:
            i -= 1
        else:  # a match (a mismatch never scores above leaving both out)
            i, j = i - 1, j - 1
            out[j] = i
    return out


class PromptToPrompt(Controller):
    """The edit controller for a batch of two images: row 0 the source, row 1 the edit."""

    def __init__(self, tokenizer, edit: Edit, chunks: int, tokens_of=None,
                 own_keys: Optional[tuple[list[int], list[int]]] = None):
        """``own_keys``: (per image, the keys its prompt's conditioning has alone; the same for its negative
        prompt's), when the batch pads them further (:meth:`key_limits`); see :func:`edit_control`."""
        edit.validate()
        self.own_keys = own_keys
        self.edit = edit
        self.tokenizer = tokenizer
        self.tokens_of = tokens_of or (lambda prompt: TokenMap.from_prompt(tokenizer, prompt))
        self._build(77 * chunks)
        self.blend = LocalBlend(self._blend_positions(), edit.blend_threshold) if edit.blend_words else None
        self.steps = 1
        self.latent_hw = (0, 0)
        self.passes: list[dict] = []  # per sampling pass: the steps whose attention was injected (``injected``)

    def _blend_positions(self) -> tuple[list[int], list[int]]:
        """The blend words' token positions in the source's prompt and in the edit's; HostError if in neither."""
        found: tuple[set, set] = (set(), set())
        maps = [self.tokens_of(prompt) for prompt in (self.edit.source, self.edit.edited_prompt)]
        for word in self.edit.blend_words:
            seen = False
            for tokens, into in zip(maps, found):
                try:
                    into.update(tokens.positions(self.tokenizer, word))
                    seen = True
                except HostError:
                    pass
            if not seen:
                raise HostError(f"blend word {word!r} is in neither prompt")
        return sorted(found[0]), sorted(found[1])

    def _build(self, length: int) -> None:
        """Token mapping, alphas and word weights for a conditioning of ``length`` tokens."""
        import torch

        self.length = length
        self._on_device = OnDevice()  # device copies of the tensors below
        self.mapper, self.alphas = token_mapping(self.tokenizer, self.edit, length, self.tokens_of)
        self.identity_map = bool(torch.equal(self.mapper, torch.eye(length)))
        dst_tokens = self.tokens_of(self.edit.edited_prompt)
        self.equalizer = torch.ones(length)
        for word, c in self.edit.weights.items():
            for p in dst_tokens.positions(self.tokenizer, word):
                if p < length:
                    self.equalizer[p] = float(c)
        # the edit's cross-attention as terms (row, B): P_edit' = sum P_row @ B (see ``mixes``)
        taken = self.equalizer * self.alphas  # per edit token: how much of the source's (mapped) map it takes
        source = (None if bool((taken == 1).all()) else taken) if self.identity_map else self.mapper * taken[None, :]
        self.cross_terms = [("source", source)]
        own = self.equalizer * (1 - self.alphas)  # new words of a refinement keep their own map
        if bool(own.any()):
            self.cross_terms.append(("edit", own))

    def begin(self, steps, latent_hw):
        self.steps = max(1, steps)
        self.latent_hw = latent_hw
        if self.blend is not None:
            self.blend.reset()
        self.passes.append({"steps": self.steps, "cross": set(), "self": set()})

    def injected(self) -> list[dict]:
        """Per sampling pass: its sampler steps and how many of them had the source's cross-attention and
        self-attention injected (``[{"steps": 20, "cross": 16, "self": 8}]``)."""
        return [{"steps": p["steps"], "cross": len(p["cross"]), "self": len(p["self"])} for p in self.passes]

    def summary(self) -> str:
        """``"cross 16/20, self 8/20"`` (a hires pass adds ``"; hires cross 8/10, self 4/10"``)."""
        parts = [f"cross {p['cross']}/{p['steps']}, self {p['self']}/{p['steps']}" for p in self.injected()]
        return "; hires ".join(parts) or "no step ran"

    def _cross_on(self, step: int) -> bool:
        return step < round(self.edit.cross_steps * self.steps)

    def _self_on(self, step: int) -> bool:
        return step < round(self.edit.self_steps * self.steps)

    def needs_probs(self, site: Site, step: int, queries: int) -> bool:
        """The local blend reads the blend words' maps at the quarter-resolution cross-attention layers."""
        return self.blend is not None and site.cross and queries == self._coarse_queries()

    def changes(self, site: Site, step: int, queries: int) -> bool:
        on = self._cross_on(step) if site.cross else self._self_on(step) and queries <= self._coarse_queries()
        if on and self.passes:
            self.passes[-1]["cross" if site.cross else "self"].add(step)
        return on

    def key_limits(self, cond_rows, uncond_rows, keys):
        """An edit whose prompt needs more 77-token chunks than its source pads the source's conditioning (the
        WebUI and we pad the shorter prompts of a batch with empty chunks): then the source would be another
        picture than its portrait. Each row attends to its own prompt's keys only, as when it was made alone."""
        if self.own_keys is None:
            return None
        limits = {}
        for rows, own in zip((cond_rows, uncond_rows), self.own_keys):
            if len(rows) == len(own):
                limits.update({r: n for r, n in zip(rows, own) if n < keys})
        return limits or None

    def probs(self, call: Call, probs) -> None:
        """The local blend's maps: every call at its layers, of every model evaluation, is summed. The edit's maps are
        the ones it attends with, after the edit (at a step whose cross-attention is injected: the source's, mapped),
        as the reference's attention store holds them (it stores the probabilities its controller then edits in
        place)."""
        pair = self._pair(call)
        if pair is not None and self.blend is not None:
            if self._cross_on(call.step):
                probs = self._edited(probs, pair)
            self.blend.add(probs, pair, call.hw)

    def _edited(self, probs, pair):
        """``probs`` (rows, heads, queries, keys) with the edit's row replaced by what ``mixes`` makes it attend with:
        ``sum_j P_{row_j} @ B_j``."""
        if probs.shape[-1] != self.length:
            self._build(probs.shape[-1])
        src, dst = pair
        rows = {"source": src, "edit": dst}
        total = None
        for who, b in self.cross_terms:
            p = probs[rows[who]]
            if b is not None:
                b = self._on_device.get(who, b, p)
                p = p * b if b.ndim == 1 else p @ b
            total = p if total is None else total + p
        out = probs.clone()
        out[dst] = total
        return out

    def mixes(self, call: Call, like) -> list[Mix]:
        """The edit row attends with the source's probabilities: as they are in self-attention; mapped onto its own
        tokens (and re-weighted) in cross-attention - ``P_edit' = P_source @ (mapper * weights)``, and for a
        refinement ``+ P_edit @ diag((1 - alphas) * weights)`` for the new words."""
        pair = self._pair(call)
        if pair is None:
            return []
        src, dst = pair
        if not call.site.cross:
            return [Mix(dst, [(src, None)])]
        if call.keys and call.keys != self.length:  # the host padded the conditioning to another chunk count
            self._build(call.keys)
        rows = {"source": src, "edit": dst}
        return [Mix(dst, [(rows[who], None if b is None else self._on_device.get(who, b, like))
                          for who, b in self.cross_terms])]

    @staticmethod
    def _pair(call: Call):
        """(source row, edit row) of the prompt half; None for a negative-prompt-only call (P2P leaves those)."""
        if not call.cond_rows:
            return None
        if len(call.cond_rows) != 2:
            raise HostError("Prompt-to-Prompt runs on a batch of two images (source and edit)")
        return call.cond_rows[0], call.cond_rows[1]

    def _coarse_queries(self) -> int:
        """Queries of the quarter-resolution layers (16x16 at 512 px on SD1.5, 32x32 at 1024 px on SDXL): P2P's
        self-attention injection works on these and coarser ones, its local blend on these."""
        h, w = self.latent_hw
        return (-(-h // 4)) * (-(-w // 4))

    def step_end(self, step: int, latents):
        """After each sampler step: the local blend (``blend.LocalBlend``) of ``latents`` (2, 4, h, w), if asked for."""
        return self.blend.apply(latents) if self.blend is not None else latents


def edit_request(req, edit: Edit):
    """The two-image request (source, edit; one seed) for an edit of ``req``. A sampler with no fixed number of
    model evaluations per step is refused (tau counts sampler steps: ``attention.clock``)."""
    import copy

    from lib_profile.attention.clock import check_supported

    check_supported(req.sampler)

    seed = req.resolved_seeds()[0]
    out = copy.copy(req)
    out.prompt = edit.source
    out.prompts = [edit.source, edit.edited_prompt]
    out.seeds = [seed, seed]
    out.batch_size = 2
    return out


def edit_control(host, edit: Edit, negative_prompt: str, control=None, tokenizer=None):
    """``control`` (progress, cancel) with the Prompt-to-Prompt controller of ``edit`` on ``host``, for the
    pass that runs :func:`edit_request`'s pair."""
    from lib_profile.attention.explain import tokenizer as default_tokenizer
    from lib_profile.hosts.base import RunControl
    from lib_profile.prompts import parse as prompts
    from lib_profile.prompts.schedule import refuse_scheduled

    host.check_attention_control("Prompt-to-Prompt")
    tok = tokenizer or default_tokenizer()
    edit.validate()
    for prompt in (edit.source, edit.edited_prompt, negative_prompt):  # tokens are mapped once for the whole run
        refuse_scheduled(prompt, "Prompt-to-Prompt")

    def chunks_of(prompt: str) -> int:  # as the host splits it (A1111 breaks long prompts at commas)
        return TokenMap.for_host(host, tok, prompt).chunks

    source, target, negative = (chunks_of(p) for p in (edit.source, edit.edited_prompt, negative_prompt))
    chunks = max(source, target, negative, *(prompts.chunk_count(tok, p) for p in (edit.source, edit.edited_prompt,
                                                                                    negative_prompt)))
    if host.pads_prompt_to_negative:
        own = [77 * max(source, negative), 77 * max(target, negative)]
        own_keys = (own, own)
    else:
        own_keys = ([77 * source, 77 * target], [77 * negative] * 2)
    controller = PromptToPrompt(tok, edit, chunks, lambda prompt: TokenMap.for_host(host, tok, prompt), own_keys)
    base = control or RunControl()
    return RunControl(base.on_step, base.should_interrupt, controller)


def run_edit(host, req, edit: Edit, control=None, tokenizer=None):
    """Source and edited image of ``req``'s prompt edited as ``edit`` says; returns the host's Result."""
    return host.txt2img(edit_request(req, edit), edit_control(host, edit, req.negative_prompt, control, tokenizer))
