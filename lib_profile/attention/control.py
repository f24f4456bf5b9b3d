"""The host-neutral attention controller.

A host that supports attention control computes every UNet attention module's output on its fast fused
(SDPA) path, and asks the controller two things about each module at each sampling step:

* ``needs_probs(site, step, queries)``: the controller wants to *read* the attention probabilities (DAAM, the
  local blend of Prompt-to-Prompt). The host hands the prompt rows' queries and keys, beside the fused output,
  to ``read(call, q, k, scale, upcast)``, ``call.cond_rows`` numbering those rows. By default that computes
  the probabilities, ``(rows, heads, queries, keys)``, and hands them to ``probs(call, probs)``; a controller
  may compute them later instead, several layers in one go (DAAM). Readers see them before any change.
* ``changes(site, step, queries)``: the controller *changes* the attention of some rows. It says how in
  ``mixes(call, like)``: each changed row attends with other rows' probabilities times key-space matrices,
  ``P_row' = sum_j P_{src_j} @ B_j``. That is linear, so the host computes it on the fused path too, as
  ``sum_j SDPA(q_{src_j}, k_{src_j}, B_j @ v_row)`` - Prompt-to-Prompt's replacement, refinement and
  re-weighting never materialise a probability tensor. Here ``call.cond_rows`` / ``call.uncond_rows`` are rows
  of the whole batch (hosts order the prompt and the negative prompt differently).

Steps are the sampler's steps (``attention.clock``): ``needs_probs``, ``changes`` and ``Call.step`` get the same step
for every model evaluation of a step (second-order samplers evaluate twice), ``Call.evaluation`` says which one, and
``step_end`` comes once per sampler step, after its last evaluation.

Everything else keeps the fused output untouched, so a generation that is only read is bit for bit a plain one.
``read_probs`` and ``mixed_attention`` are that shared logic; the hosts only lay out q, k and v.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Optional


@dataclass(frozen=True)
class Site:
    """One attention module of the UNet."""

    index: int  # position among the UNet's attention modules, in forward order
    name: str  # module path in the host's model (diffusers or compvis naming)
    place: str  # "down" | "mid" | "up"
    cross: bool  # True: attends to the prompt (attn2); False: self-attention (attn1)
    heads: int


@dataclass
class Call:
    site: Site
    step: int  # 0-based sampler step of this pass (``attention.clock``: the same for every evaluation of a step)
    steps: int  # sampler steps of this pass
    hw: tuple[int, int]  # the queries' spatial grid (h, w); h * w == probs.shape[2]
    cond_rows: list[int] = field(default_factory=list)
    uncond_rows: list[int] = field(default_factory=list)
    keys: int = 0  # the conditioning's token count (77 per prompt chunk) for cross-attention
    evaluation: int = 0  # which model evaluation of the step (second-order samplers make two)
    key_limits: Optional[dict] = None  # batch row -> the keys it attends to (the first n); None: all (key_limits)


@dataclass
class Mix:
    """Row ``row`` of the batch attends with ``sum(probs[src] @ B for src, B in terms)``. ``B``: a (keys, keys)
    matrix, a (keys,) vector (a diagonal matrix), or None (the identity); on the attention's device and dtype."""

    row: int
    terms: list = field(default_factory=list)  # [(src row, B), ...]


class Controller:
    """Sees nothing, changes nothing; subclasses override what they need."""

    def begin(self, steps: int, latent_hw: tuple[int, int]) -> None:
        """A sampling pass of ``steps`` steps on a ``latent_hw`` latent starts."""

    def needs_probs(self, site: Site, step: int, queries: int) -> bool:
        """Whether this module, at this step, with ``queries`` query positions, has probabilities to read."""
        return False

    def read(self, call: Call, q, k, scale: float, upcast: bool = False) -> None:
        """Read the prompt rows' attention, given their queries and keys (``(rows, heads, tokens, d)``); by
        default: their probabilities, handed to ``probs`` (0 past a row's key limit). The tensors are the host's: not
        to be changed."""
        limits = None if not call.key_limits else [call.key_limits.get(r, k.shape[2]) for r in range(k.shape[0])]
        self.probs(call, attention_probs(q, k, scale, upcast, limits))

    def probs(self, call: Call, probs) -> None:
        """Read the prompt rows' probabilities (``(rows, heads, queries, keys)``)."""

    def changes(self, site: Site, step: int, queries: int) -> bool:
        """Whether this module's attention changes at this step (then ``mixes`` says how)."""
        return False

    def key_limits(self, cond_rows: list[int], uncond_rows: list[int], keys: int) -> Optional[dict[int, int]]:
        """For a cross-attention call with ``keys`` keys: batch row -> how many of the first keys that row attends
        to, where a row's conditioning was padded past its own (a batch of prompts of different chunk counts);
        None: every row attends to all. The host then computes every row of the call that way (``limited_sdpa``),
        read or not, so a row is conditioned exactly as it would be alone."""
        return None

    def mixes(self, call: Call, like) -> list[Mix]:
        """The rows whose attention changes, and how; ``like``: a tensor on the attention's device and dtype."""
        return []

    def step_end(self, step: int, latents):
        """After each sampler step (its last model evaluation): may return changed latents (Prompt-to-Prompt's
        local blend)."""
        return latents

    def end(self) -> None:
        """The pass ended (also after an error or an interrupt)."""


@functools.lru_cache(maxsize=256)
def query_grid(latent_hw: tuple[int, int], n_queries: int) -> tuple[int, int]:
    """The (h, w) grid of a layer's queries, from the latent size and the query count."""
    lh, lw = latent_hw
    factor = 1
    while (lh // factor) * (lw // factor) > n_queries and factor < 64:
        factor *= 2
    h, w = -(-lh // factor), -(-lw // factor)  # the UNet's downsamplers round up
    if h * w != n_queries:
        raise ValueError(f"cannot place {n_queries} queries on a {lh}x{lw} latent")
    return h, w


def place_of(name: str) -> str:
    if "down" in name or "input_blocks" in name:
        return "down"
    if "mid" in name or "middle_block" in name:
        return "mid"
    return "up"


class Chain(Controller):
    """Several controllers on one pass (e.g. DAAM recording a P2P edit)."""

    def __init__(self, *controllers: Controller):
        self.controllers = [c for c in controllers if c is not None]

    def begin(self, steps, latent_hw):
        for c in self.controllers:
            c.begin(steps, latent_hw)

    def needs_probs(self, site, step, queries):
        return any(c.needs_probs(site, step, queries) for c in self.controllers)

    def read(self, call, q, k, scale, upcast=False):
        queries = call.hw[0] * call.hw[1]
        for c in self.controllers:
            if c.needs_probs(call.site, call.step, queries):
                c.read(call, q, k, scale, upcast)

    def changes(self, site, step, queries):
        return any(c.changes(site, step, queries) for c in self.controllers)

    def key_limits(self, cond_rows, uncond_rows, keys):
        found = [c.key_limits(cond_rows, uncond_rows, keys) for c in self.controllers]
        found = [f for f in found if f]
        if len(found) > 1 and any(f != found[0] for f in found):
            raise ValueError("two controllers limit the keys of a call differently")
        return found[0] if found else None

    def mixes(self, call, like):
        queries = call.hw[0] * call.hw[1]
        out = [m for c in self.controllers if c.changes(call.site, call.step, queries) for m in c.mixes(call, like)]
        if len({m.row for m in out}) != len(out):
            raise ValueError("two controllers change the same row's attention")
        return out

    def step_end(self, step, latents):
        for c in self.controllers:
            latents = c.step_end(step, latents)
        return latents

    def end(self):
        for c in self.controllers:
            c.end()


def attention_probs(q, k, scale: float, upcast: bool = False, limits: Optional[list[int]] = None):
    """softmax(q k^T * scale) for q, k of (batch, heads, tokens, d); in float32 when ``upcast``. ``limits``: per
    batch row, the keys it attends to (the first n; the rest get probability 0)."""
    if upcast:
        q, k = q.float(), k.float()
    logits = q @ k.transpose(-1, -2) * scale
    if limits is not None and any(n < k.shape[2] for n in limits):
        import torch

        keys = torch.arange(k.shape[2], device=k.device)
        allowed = keys[None, :] < torch.tensor(limits, device=k.device)[:, None]  # (batch, keys)
        logits = logits.masked_fill(~allowed[:, None, None, :], float("-inf"))
    return logits.softmax(dim=-1)


def limited_sdpa(q, k, v, limits: Optional[dict[int, int]] = None, scale: Optional[float] = None):
    """``scaled_dot_product_attention(q, k, v)`` ((batch, heads, tokens, d)) where each batch row ``r`` attends only
    to its first ``limits[r]`` keys: rows of one limit go through the fused kernel together, on their keys cut
    to that limit - the same computation as the row alone with its own, shorter, conditioning."""
    import torch.nn.functional as F

    keys = k.shape[2]
    if not limits or all(n >= keys for n in limits.values()):
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    groups: dict[int, list[int]] = {}
    for row in range(q.shape[0]):
        groups.setdefault(min(limits.get(row, keys), keys), []).append(row)
    out = q.new_empty(q.shape[:-1] + (v.shape[-1],))
    for n, rows in groups.items():
        part = F.scaled_dot_product_attention(batch_rows(q, rows), batch_rows(k, rows)[:, :, :n],
                                              batch_rows(v, rows)[:, :, :n], scale=scale)
        if rows == list(range(rows[0], rows[0] + len(rows))):
            out[rows[0]:rows[0] + len(rows)] = part
        else:
            out[rows] = part
    return out


def batch_rows(t, rows: list[int]):
    """``t``'s rows on the batch axis (a view when they are consecutive, as every host's are)."""
    first = rows[0]
    if rows == list(range(first, first + len(rows))):
        return t[first:first + len(rows)]
    return t[rows]


def read_probs(controller: Controller, call: Call, q, k, scale: float, upcast: bool = False) -> None:
    """Hand ``controller`` the prompt rows' attention to read (the module's output comes from its fused path).
    ``q``, ``k``: (batch, heads, tokens, d), or a callable giving them for the given rows (so a host projects only
    those rows)."""
    if not call.cond_rows:  # a negative-prompt-only call: nothing to read
        return
    if callable(q):
        q, k = q(call.cond_rows)
    else:
        q, k = batch_rows(q, call.cond_rows), batch_rows(k, call.cond_rows)
    rows = list(range(len(call.cond_rows)))
    limits = None
    if call.key_limits:  # renumbered with the rows
        limits = {i: call.key_limits[r] for i, r in enumerate(call.cond_rows) if r in call.key_limits}
    controller.read(replace(call, cond_rows=rows, uncond_rows=[], key_limits=limits), q, k, scale, upcast)


def mixed_attention(controller: Controller, call: Call, q, k, v, out, scale: Optional[float] = None):
    """``out`` (the fused output, (batch, heads, queries, d)) with the rows the controller changes recomputed,
    each as ``sum_j SDPA(q[src_j], k[src_j], B_j @ v[row])``: fused too, no probabilities materialised. A source
    row with a key limit (``Call.key_limits``) attends to its own keys only."""
    import torch.nn.functional as F

    limits = call.key_limits or {}
    for mix in controller.mixes(call, v):
        value, total = v[mix.row], None
        for src, b in mix.terms:
            moved = value if b is None else b[:, None] * value if b.ndim == 1 else b @ value
            n = min(limits.get(src, k.shape[2]), k.shape[2])  # P_src is 0 past the source's own keys
            part = F.scaled_dot_product_attention(q[src:src + 1], k[src:src + 1, :, :n], moved[None, :, :n],
                                                  scale=scale)
            total = part if total is None else total + part
        out[mix.row] = total[0]
    return out


def optional(controller: Optional[Controller]) -> Controller:
    return controller if controller is not None else Controller()


class OnDevice:
    """Small CPU tensors (index lists, mapping matrices) copied to the device once, not at every attention
    call: a copy from host memory waits for the GPU to catch up, which stalls a launch-bound generation at
    every call that makes one."""

    def __init__(self):
        self._cache: dict[tuple, object] = {}

    def get(self, name, value, like):
        """``value`` (a tensor, a function making one, or a list of indices) on ``like``'s device (tensors also in
        its dtype)."""
        import torch

        index = isinstance(value, (list, tuple))
        key = (name, like.device, None if index else like.dtype)
        found = self._cache.get(key)
        if found is None:
            if callable(value):
                value = value()
            found = (torch.tensor(value, dtype=torch.long) if index else value).to(
                like.device, None if index else like.dtype)
            self._cache[key] = found
        return found
