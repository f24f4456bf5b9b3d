"""A pass's text conditioning by model evaluation, for the diffusers host: prompt editing and alternation.

Each prompt (and the negative prompt) is read into its WebUI schedule (:mod:`lib_profile.prompts.schedule`),
each distinct text encoded once with the WebUI's emphasis, chunks and CLIP skip, all padded to the same number
of 77-token chunks (as the WebUI encodes a schedule's texts in one batch, and pads a prompt to its negative
prompt's length). A prompt without such syntax gives one entry, encoded exactly as before. A prompt combining
prompts with ``AND`` (composable diffusion) is refused with a clear HostError: this host guides with one prompt.

How a text becomes conditioning is the model family's: a prompt encoder (:class:`ClipPromptEncoder` for SD1.5's one
CLIP encoder, :class:`~.sdxl_prompts.SdxlPromptEncoder` for SDXL's two, which also give a pooled vector).
"""

from __future__ import annotations

from typing import Optional

from lib_profile.prompts import parse as prompts
from lib_profile.prompts.schedule import index_at, refuse_composable, schedule


class ClipPromptEncoder:
    """SD1.5's prompt encoder: one CLIP text encoder, the WebUI's emphasis, chunks and CLIP skip; no pooled vector.
    ``encode(text, chunks, zero)`` -> ``((1, 77 * chunks, hidden), None)``; ``zero`` (an empty negative prompt that
    SDXL conditions with zeros) means nothing here."""

    def __init__(self, text_encoder, tokenizer, clip_skip: int = 1):
        self.text_encoder, self.tokenizer, self.clip_skip = text_encoder, tokenizer, clip_skip

    def chunks(self, text: str) -> int:
        return prompts.chunk_count(self.tokenizer, text)

    def encode(self, text: str, chunks: int, zero: bool = False):
        return prompts.encode(self.text_encoder, self.tokenizer, text, self.clip_skip, min_chunks=chunks)[0], None


class ScheduledEmbeds:
    """The embeddings of ``images`` prompts (one per image) and one negative prompt over a pass.

    ``steps``: the schedule's step count (:func:`lib_profile.prompts.schedule.total_steps`); ``hires_steps``: set for a hires
    fix pass (then ``steps`` is the first pass's count). :meth:`at` gives ``(cond, uncond)`` for a model
    evaluation, each ``(images, 77 * chunks, hidden)``; :meth:`pooled_at` the pooled vectors ``(images, width)`` of
    a family that has them (SDXL), else None. ``encoder``: the family's prompt encoder (default: SD1.5's,
    :class:`ClipPromptEncoder` over ``text_encoder``, ``tokenizer``, ``clip_skip``).
    """

    def __init__(self, text_encoder, tokenizer, images: list[str], negative: str, clip_skip: int, steps: int,
                 hires_steps: Optional[int] = None, encoder=None):
        import torch

        encoder = encoder or ClipPromptEncoder(text_encoder, tokenizer, clip_skip)
        untagged = [prompts.extract_networks(p)[0] for p in images]  # tags go first, as in the WebUI
        for text in untagged:  # the negative prompt reads AND as text, as in the WebUI
            refuse_composable(text, "The standalone (diffusers) host")
        self.positive = [schedule(text, steps, hires_steps) for text in untagged]
        self.negative = schedule(prompts.extract_networks(negative)[0], steps, hires_steps)
        texts = list(dict.fromkeys(t for entries in [*self.positive, self.negative] for _end, t in entries))
        chunks = max(encoder.chunks(t) for t in texts)
        # SDXL conditions an empty negative prompt (every text of its schedule empty) with zeros, as A1111 does
        zero = all(t == "" for _end, t in self.negative)
        with torch.no_grad():
            self._encoded = {t: encoder.encode(t, chunks) for t in texts}
            self._negative = {t: encoder.encode(t, chunks, True) if zero else self._encoded[t]
                              for _end, t in self.negative}
        self.changes = any(len(entries) > 1 for entries in [*self.positive, self.negative])
        self._cache: dict[tuple, tuple] = {}

    def texts_at(self, evaluation: int) -> tuple[list[str], str]:
        """The prompts' texts and the negative prompt's text at ``evaluation`` (0-based)."""
        pos = [entries[index_at(entries, evaluation)][1] for entries in self.positive]
        return pos, self.negative[index_at(self.negative, evaluation)][1]

    def at(self, evaluation: int):
        """``(cond, uncond)`` for model evaluation ``evaluation`` (0-based, from the pass's first evaluation)."""
        import torch

        key = (tuple(index_at(e, evaluation) for e in self.positive), index_at(self.negative, evaluation))
        if key not in self._cache:
            pos, neg = self.texts_at(evaluation)
            cond = torch.cat([self._encoded[t][0] for t in pos])
            uncond = self._negative[neg][0].repeat(len(pos), 1, 1)
            pooled = None
            if self._negative[neg][1] is not None:
                pooled = (torch.cat([self._encoded[t][1] for t in pos]), self._negative[neg][1].repeat(len(pos), 1))
            self._cache[key] = (cond, uncond, pooled)
        return self._cache[key][:2]

    def pooled_at(self, evaluation: int):
        """``(pooled, negative pooled)``, each ``(images, width)``, at ``evaluation``; None for a family without."""
        self.at(evaluation)
        key = (tuple(index_at(e, evaluation) for e in self.positive), index_at(self.negative, evaluation))
        return self._cache[key][2]

    def pipeline_embeds(self, evaluation: int, guided: bool):
        """The ``prompt_embeds`` a diffusers loop uses at ``evaluation``: ``[uncond; cond]`` when guided (CFG)."""
        import torch

        cond, uncond = self.at(evaluation)
        return torch.cat([uncond, cond]) if guided else cond

    def pipeline_pooled(self, evaluation: int, guided: bool):
        """The ``add_text_embeds`` an SDXL loop uses at ``evaluation``: ``[negative; prompt]`` pooled when guided."""
        import torch

        pooled, negative = self.pooled_at(evaluation)
        return torch.cat([negative, pooled]) if guided else pooled
