"""A textbook Prompt-to-Prompt, for the tests only: an oracle for ``lib_profile.attention.p2p``.

It follows the reference implementation of Hertz et al., "Prompt-to-Prompt Image Editing with Cross
Attention Control" (ICLR 2023), github.com/google/prompt-to-prompt: the notebook's ``AttentionReplace``,
``AttentionRefine``, ``AttentionReweight`` and ``LocalBlend``, and ``seq_aligner.py``'s replacement mapper
and global alignment. It is written apart from our attention control on purpose (it imports none of
``lib_profile.attention``): its own diffusers attention processor *materialises* every layer's
probabilities ``P = softmax(q k^T * scale)`` per head and edits them as the reference does, where ours
never materialises them. Only the pipeline, scheduler and prompt embeddings are taken from our diffusers
host, so that both run the very same sampling.

What it does, where the reference is silent or made for one 77-token chunk and DDIM, is the issue's spec:

* two images in one batch, the source (row 0) and the edit (row 1), one seed; diffusers lays the
  classifier-free-guidance batch out as [negative..., prompt...]: only the prompt half is edited.
* the step clock counts the sampler's steps 0..n-1, read from the scheduler: with ``len(timesteps) == n``
  each UNet evaluation is a step; with ``2n - 1`` (Heun, DPM2, DPM2 a, DPM++ SDE: two evaluations a step,
  one for the last) evaluation i belongs to step i // 2. Every evaluation of a step is controlled alike.
* the edit's cross-attention is replaced for steps < round(cross_steps * n); its self-attention by the
  source's for steps < round(self_steps * n), at the layers of at most the quarter latent's query count
  (ceil(h/4) * ceil(w/4): 16x16 at 512 px, the reference's ``<= 16 ** 2``).
* swap: ``P_edit' = P_src @ M``, M the reference's replacement mapper over space-separated words: a
  source word of a tokens swapped for a target word of b tokens gives ``M[s, t] = 1/b`` for s in the
  source word and t in the target word, equal counts map one to one; all other positions (each chunk's
  BOS, EOS and padding) follow in order, the surplus at the end of the longer list merged into (or split from)
  the shorter's last position, so each row of ``P_src @ M`` sums to 1 (the issue's spec: the mass is kept).
* refine: the reference's global alignment (gap 0, match 1, mismatch -1, its tie-breaking) of the
  prompts' tokens ``[BOS, tokens..., EOS]``; ``P_edit' = P_src[:, :, mapper] * alphas + P_edit * (1 -
  alphas)``; every position outside the aligned sequence (padding, later chunks' BOS/EOS) maps to itself.
  Over several chunks the aligned sequence is the whole prompt, placed on the chunk layout.
* reweight: ``P_edit' = replaced * equalizer`` (c per token of the weighted words of the edited prompt),
  the replaced map as for the mode (the source's own for mode ``reweight``).
* local blend (``LocalBlend``): the blend words' maps of each prompt at the quarter-size cross-attention
  layers (the maps each row attends with, after the edit, as the reference's store holds them), summed
  over the words' tokens, averaged over layers and heads, summed over every evaluation so far; 3x3 max
  pool, nearest interpolation to the latent, each prompt normalised by its own max, thresholded, the two
  masks' union; ``x_edit = x_src + mask * (x_edit - x_src)`` after each full sampler step.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

CHUNK_TOKENS = 75  # prompt tokens per CLIP chunk; a chunk is BOS + 75 + EOS = 77 positions


@dataclass
class OracleEdit:
    """The edit, in the terms of our ``Edit`` (so one dict describes both)."""

    source: str
    target: str = ""
    mode: str = "swap"  # swap | refine | reweight
    cross_steps: float = 0.8
    self_steps: float = 0.4
    weights: dict = field(default_factory=dict)
    blend_words: list = field(default_factory=list)
    blend_threshold: float = 0.3

    @property
    def edited(self) -> str:
        return self.target or self.source


# ---------------------------------------------------------------- prompts on the conditioning's token axis

class Layout:
    """Where each space-separated word's tokens sit on the conditioning (chunks of 77 positions)."""

    def __init__(self, tokenizer, prompt: str, chunks: int):
        self.words = prompt.split(" ")
        self.word_ids = [tokenizer(w, add_special_tokens=False).input_ids for w in self.words]
        self.ids = [i for ids in self.word_ids for i in ids]
        self.chunks = chunks
        self.length = 77 * chunks
        if len(self.ids) > CHUNK_TOKENS * chunks:
            raise ValueError("prompt longer than its chunks")
        self.word_positions, k = [], 0
        for ids in self.word_ids:
            self.word_positions.append([self.position(k + j) for j in range(len(ids))])
            k += len(ids)
        owned = {p for ps in self.word_positions for p in ps}
        self.others = [p for p in range(self.length) if p not in owned]  # BOS, EOS, padding, in order

    @staticmethod
    def position(k: int) -> int:
        """Conditioning position of the prompt's k-th token (0-based)."""
        return (k // CHUNK_TOKENS) * 77 + 1 + k % CHUNK_TOKENS

    def sequence(self) -> tuple[list[int], list[int]]:
        """The reference's ``tokenizer.encode``: [BOS, tokens..., EOS] ids, and their positions."""
        n = len(self.ids)
        positions = [0] + [self.position(k) for k in range(n)] + [self.position(n - 1) + 1 if n else 1]
        return [-1] + self.ids + [-2], positions

    def positions_of(self, word: str) -> list[int]:
        return [p for w, ps in zip(self.words, self.word_positions) if w == word for p in ps]

    def check(self, host_chunks) -> None:
        """The host encodes the same tokens at these positions (its chunks: lists of 77 ids)."""
        flat = [i for chunk in host_chunks for i in chunk]
        for k, token in enumerate(self.ids):
            if flat[self.position(k)] != token:
                raise AssertionError(f"the oracle's token layout differs from the host's at token {k}")


def replacement_mapper(src: Layout, dst: Layout) -> torch.Tensor:
    """The reference's word-swap mapper, (K, K): ``P_edit = P_src @ M``."""
    if len(src.words) != len(dst.words):
        raise ValueError("a word swap keeps the number of words")
    m = torch.zeros(src.length, dst.length, dtype=torch.float64)
    for s, t in zip(src.word_positions, dst.word_positions):
        if len(s) == len(t):
            for a, b in zip(s, t):
                m[a, b] = 1.0
        else:
            for b in t:
                for a in s:
                    m[a, b] = 1.0 / len(t)
    # the positions outside words (BOS, EOS, padding) follow in order; where one prompt has more of them (its swapped
    # word has fewer tokens), the surplus at the end merges into (or is split from) the other's last position, so
    # every row of P_src @ M still sums to 1 (the reference's own tail, ``mapper[j, j] = 1`` after the last swapped
    # word, maps the edit's later words onto source positions shifted by the length difference)
    n = min(len(src.others), len(dst.others))
    for a, b in zip(src.others[:n - 1], dst.others[:n - 1]):
        m[a, b] = 1.0
    tail_src, tail_dst = src.others[n - 1:], dst.others[n - 1:]
    for a in tail_src:
        for b in tail_dst:
            m[a, b] = 1.0 / len(tail_dst)
    assert torch.allclose(m.sum(1), torch.ones(src.length, dtype=m.dtype)), "mass not kept"
    return m


def global_alignment(x: list[int], y: list[int]) -> list[int]:
    """For each element of y, the index of the x element it is aligned with (-1: none): Needleman-Wunsch with
    gap 0, match 1, mismatch -1, preferring at ties a gap in x, then a gap in y, then the diagonal (the
    reference's ``seq_aligner.global_align`` scoring and traceback)."""
    gap, match, mismatch = 0, 1, -1
    rows, cols = len(x) + 1, len(y) + 1
    score = [[0] * cols for _ in range(rows)]
    move = [[""] * cols for _ in range(rows)]
    for j in range(1, cols):
        score[0][j], move[0][j] = j * gap, "y"  # y[j-1] against nothing
    for i in range(1, rows):
        score[i][0], move[i][0] = i * gap, "x"  # x[i-1] against nothing
    for i in range(1, rows):
        for j in range(1, cols):
            options = (
                (score[i][j - 1] + gap, "y"),
                (score[i - 1][j] + gap, "x"),
                (score[i - 1][j - 1] + (match if x[i - 1] == y[j - 1] else mismatch), "xy"),
            )
            best = max(v for v, _m in options)
            score[i][j] = best
            move[i][j] = next(m for v, m in options if v == best)
    aligned = [-1] * len(y)
    i, j = len(x), len(y)
    while i > 0 or j > 0:
        step = move[i][j]
        if step == "xy":
            aligned[j - 1] = i - 1
            i, j = i - 1, j - 1
        elif step == "y":
            j -= 1
        else:
            i -= 1
    return aligned


def refinement_mapper(src: Layout, dst: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """(mapper, alphas) over the edit's K positions: the edit position t takes the source's column mapper[t]
    where alphas[t] is 1, keeps its own where 0."""
    x_ids, x_pos = src.sequence()
    y_ids, y_pos = dst.sequence()
    mapper = torch.arange(dst.length)
    alphas = torch.ones(dst.length, dtype=torch.float64)
    for j, i in enumerate(global_alignment(x_ids, y_ids)):
        if i < 0:
            alphas[y_pos[j]] = 0.0
        else:
            mapper[y_pos[j]] = x_pos[i]
    return mapper, alphas


# ---------------------------------------------------------------- the controller and its attention processor

class Oracle:
    def __init__(self, tokenizer, edit: OracleEdit, length: int, steps: int, latent_hw: tuple[int, int]):
        chunks = length // 77
        self.edit = edit
        self.src = Layout(tokenizer, edit.source, chunks)
        self.dst = Layout(tokenizer, edit.edited, chunks)
        self.steps = steps
        self.latent_hw = latent_hw
        h, w = latent_hw
        self.quarter_hw = (-(-h // 4), -(-w // 4))
        self.quarter = self.quarter_hw[0] * self.quarter_hw[1]
        self.cross_end = round(edit.cross_steps * steps)
        self.self_end = round(edit.self_steps * steps)
        if edit.mode == "refine":
            self.mapper, self.alphas = refinement_mapper(self.src, self.dst)
            self.matrix = None
        elif edit.mode == "swap":
            self.matrix = replacement_mapper(self.src, self.dst)
        elif edit.mode == "reweight":
            self.matrix = torch.eye(length, dtype=torch.float64)
        else:
            raise ValueError(edit.mode)
        self.equalizer = None
        if edit.weights:
            self.equalizer = torch.ones(length, dtype=torch.float64)
            for word, c in edit.weights.items():
                positions = self.dst.positions_of(word)
                if not positions:
                    raise ValueError(f"{word!r} is not a word of the edited prompt")
                self.equalizer[positions] = float(c)
        self.blend_tokens = [[p for word in edit.blend_words for p in layout.positions_of(word)]
                             for layout in (self.src, self.dst)]
        self.blending = bool(edit.blend_words)
        if self.blending and not any(self.blend_tokens):
            raise ValueError("no blend word is in either prompt")
        self.blend_sum = None  # (2, quarter queries): the blend words' maps, summed so far
        self.evaluation = 0  # UNet evaluations done
        self.evaluations = None  # len(scheduler.timesteps), read when sampling starts
        self.scheduler = None
        self.blends = 0  # full steps blended (for the tests)
        self.mask_cover: list[float] = []  # each blend's share of the latent taken from the edit (for the tests)
        self.margins: list[float] = []  # each blend's closest normalised map value to the threshold (for the tests)
        self.step_log: list[int] = []  # the step of each evaluation (for the tests)

    # the step clock
    def step_of(self, evaluation: int) -> int:
        n, e = self.steps, self.evaluations
        if e == n:
            return evaluation
        if e == 2 * n - 1:
            return evaluation // 2
        raise AssertionError(f"a scheduler with {e} timesteps for {n} steps")

    def ends_step(self, evaluation: int) -> bool:
        return evaluation + 1 == self.evaluations or self.step_of(evaluation + 1) != self.step_of(evaluation)

    # the attention of one module, materialised: probs (batch, heads, queries, keys), edited in place
    def attend(self, probs: torch.Tensor, cross: bool) -> torch.Tensor:
        if self.evaluations is None:
            self.evaluations = len(self.scheduler.timesteps)
        step = self.step_of(self.evaluation)
        batch, _heads, queries, _keys = probs.shape
        half = batch // 2 if batch == 4 else 0  # [negative, negative, prompt, prompt] under CFG
        src, dst = half, half + 1
        if cross:
            if step < self.cross_end:
                p_src, p_dst = probs[src].double(), probs[dst].double()
                if self.matrix is None:  # refine
                    new = p_src[:, :, self.mapper] * self.alphas + p_dst * (1 - self.alphas)
                else:
                    new = torch.einsum("hqk,kt->hqt", p_src, self.matrix)
                if self.equalizer is not None:
                    new = new * self.equalizer
                probs[dst] = new.to(probs.dtype)
            if self.blending and queries == self.quarter:
                maps = torch.stack([probs[row][:, :, tokens].sum(-1).sum(0) if tokens else
                                    torch.zeros(queries, dtype=probs.dtype)
                                    for row, tokens in ((src, self.blend_tokens[0]), (dst, self.blend_tokens[1]))])
                maps = maps.double() / probs.shape[1]
                self.blend_sum = maps if self.blend_sum is None else self.blend_sum + maps
        elif step < self.self_end and queries <= self.quarter:
            probs[dst] = probs[src]
        return probs

    # after each UNet evaluation (the pipeline's step-end callback)
    def after_evaluation(self, pipe, i, t, kwargs):
        assert i == self.evaluation, (i, self.evaluation)
        ends = self.ends_step(i)
        self.step_log.append(self.step_of(i))
        if hasattr(self.scheduler, "state_in_first_order") and i + 1 < self.evaluations:
            # the 2-evaluation schedulers say themselves whether a step is complete (after the last evaluation,
            # a last step of one Euler-like evaluation, some hold a half step they will never finish)
            assert bool(self.scheduler.state_in_first_order) == ends, (i, "step clock vs scheduler state")
        if ends and self.blending and self.blend_sum is not None:
            kwargs["latents"] = self.blend(kwargs["latents"])
        self.evaluation += 1
        return kwargs

    def blend(self, latents: torch.Tensor) -> torch.Tensor:
        maps = self.blend_sum.reshape(2, 1, *self.quarter_hw)
        maps = F.max_pool2d(maps, kernel_size=3, stride=1, padding=1)
        maps = F.interpolate(maps, size=tuple(latents.shape[-2:]), mode="nearest")
        top = maps.amax(dim=(2, 3), keepdim=True)
        masks = torch.where(top > 0, maps / torch.where(top > 0, top, torch.ones_like(top)), torch.zeros_like(maps))
        mask = ((masks[0] > self.edit.blend_threshold) | (masks[1] > self.edit.blend_threshold)).to(latents.dtype)
        self.margins.append(float((masks - self.edit.blend_threshold).abs().min()))
        out = latents.clone()
        out[1] = latents[0] + mask * (latents[1] - latents[0])
        self.blends += 1
        self.mask_cover.append(float(mask.mean()))
        return out


class OracleProcessor:
    """An attention processor that materialises the probabilities and lets the oracle edit them."""

    def __init__(self, oracle: Oracle, cross: bool):
        self.oracle = oracle
        self.cross = cross

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        assert attention_mask is None and attn.norm_cross is None and not attn.residual_connection
        batch, n, _ = hidden_states.shape
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        heads = attn.heads
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        d = q.shape[-1] // heads
        q, k, v = (x.reshape(batch, -1, heads, d).permute(0, 2, 1, 3) for x in (q, k, v))
        probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * attn.scale, dim=-1)
        probs = self.oracle.attend(probs, self.cross)
        out = torch.matmul(probs, v).permute(0, 2, 1, 3).reshape(batch, n, heads * d)
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


def run(host, req, edit: OracleEdit):
    """The (source, edit) images of ``req``'s prompt edited as ``edit`` says, on ``host``'s pipeline, with the
    oracle's attention instead of the host's. Returns (images, oracle)."""
    from lib_profile.hosts.diffusers import samplers
    from lib_profile.prompts import parse as prompts

    tokenizer = host.model.tokenizer
    seed = req.resolved_seeds()[0]
    pair = copy.copy(req)
    pair.prompt, pair.prompts, pair.seeds, pair.batch_size = edit.source, [edit.source, edit.edited], [seed] * 2, 2
    with torch.no_grad():
        cond, uncond = host._embeds(pair, 2).at(0)  # the host's own encoding (emphasis, chunks); no schedule
    embeds = {"prompt_embeds": cond, "negative_prompt_embeds": uncond}
    length = cond.shape[1]
    latent_hw = (req.height // 8, req.width // 8)
    oracle = Oracle(tokenizer, edit, length, req.steps, latent_hw)
    for layout, text in ((oracle.src, edit.source), (oracle.dst, edit.edited)):
        chunks = prompts.chunk_tokens(tokenizer, prompts.parse(text).pieces)
        layout.check([c.ids for c in chunks])
    scheduler = samplers.make_scheduler(req.sampler, req.scheduler, host.model.scheduler_config)[0]
    if hasattr(scheduler, "noise_sampler_seed"):
        scheduler.noise_sampler_seed = [seed, seed]
    oracle.scheduler = scheduler
    pipe = host.pipeline("txt2img")
    pipe.scheduler = scheduler
    unet = pipe.unet
    saved = unet.attn_processors
    unet.set_attn_processor({name: OracleProcessor(oracle, ".attn2." in name) for name in saved})
    try:
        images = pipe(num_inference_steps=req.steps, guidance_scale=req.cfg_scale,
                      generator=[torch.Generator("cpu").manual_seed(seed) for _ in range(2)],
                      callback_on_step_end=oracle.after_evaluation, output_type="pil", width=req.width,
                      height=req.height, **embeds).images
    finally:
        unet.set_attn_processor(saved)
    assert oracle.evaluation == oracle.evaluations
    return images, oracle
