"""Prompt-to-Prompt's local blend: keep the source's latent outside the edited words' region.

Hertz et al., "Prompt-to-Prompt Image Editing with Cross Attention Control", ICLR 2023: Algorithm 1, its optional
local-editing lines (the mask ``alpha = B(M_t, w) U B(M*_t, w*)``, then ``z*_{t-1} = (1 - alpha) * z_{t-1} +
alpha * z*_{t-1}``), as the reference notebook's ``LocalBlend`` computes it:

1. the blend words' cross-attention probabilities at the quarter-resolution layers (16x16 at 512 px on SD1.5, 32x32 at
   1024 px on SDXL), of every model evaluation of every sampler step so far, are summed; per prompt over its blend
   words' tokens, and averaged over heads: one map per prompt, ``(2, h, w)``;
2. each map is max-pooled (3x3, stride 1), brought to the latent's size (nearest), divided by its own maximum and
   thresholded (``> threshold``);
3. the mask is the union of the source's and the edit's masks, and the edit's latent becomes
   ``x_src + mask * (x_edit - x_src)`` after each sampler step.

Not taken from the later reference notebooks: a step before which no blend is made (``start_blend``) and words whose
region is taken out of the mask (``substruct_words``).
"""

from __future__ import annotations

from lib_profile.attention.control import OnDevice


class LocalBlend:
    """The running maps of one sampling pass and the mask they give. ``positions``: the blend words' token positions
    in the source's prompt and in the edit's (either may be empty: a word of one prompt only); ``threshold`` in
    (0, 1), of each map's maximum."""

    def __init__(self, positions: tuple[list[int], list[int]], threshold: float):
        self.positions = positions
        self.threshold = threshold
        self._on_device = OnDevice()
        self.sums = None  # (2, h, w) float32: the source's and the edit's maps, summed over the calls so far

    def reset(self) -> None:
        """A sampling pass starts: nothing summed yet."""
        self.sums = None

    def add(self, probs, rows: tuple[int, int], hw: tuple[int, int]) -> None:
        """Add one attention call's maps. ``probs``: (rows, heads, queries, keys) probabilities of the prompt rows,
        ``rows``: the source's and the edit's row in it, ``hw``: the queries' grid (h * w == queries)."""
        import torch

        maps = []
        for k, (row, positions) in enumerate(zip(rows, self.positions)):
            if positions:
                index = self._on_device.get(("blend", k), positions, probs)
                m = probs[row].index_select(-1, index).sum(-1).mean(0).float()
            else:
                m = probs.new_zeros(hw[0] * hw[1], dtype=torch.float32)
            maps.append(m.reshape(hw))
        now = torch.stack(maps)
        # out of place: the sums may be inference tensors of an earlier call (a host sampling in inference mode)
        self.sums = now if self.sums is None else self.sums + now

    def mask(self, latent_hw: tuple[int, int]):
        """The blend mask, (1, 1, *latent_hw) bool, or None before any map was added."""
        import torch.nn.functional as F

        if self.sums is None:
            return None
        m = F.max_pool2d(self.sums[:, None], 3, 1, 1)
        m = F.interpolate(m, size=tuple(latent_hw), mode="nearest")
        top = m.amax(dim=(2, 3), keepdim=True).clamp_min(1e-30)  # a prompt without blend words: all 0, no mask
        return (m / top > self.threshold).any(0, keepdim=True)

    def apply(self, latents):
        """``latents`` (2, channels, h, w), source and edit, with the edit's taken from the source outside the mask."""
        mask = self.mask(tuple(latents.shape[-2:]))
        if mask is None:
            return latents
        mask = mask.to(latents.device, latents.dtype)
        out = latents.clone()
        out[1:2] = latents[0:1] + mask * (latents[1:2] - latents[0:1])
        return out
