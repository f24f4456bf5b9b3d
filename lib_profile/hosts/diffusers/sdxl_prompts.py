"""SDXL's prompt encoding as A1111 1.10 does it (``sd_hijack_clip``'s ``FrozenCLIPEmbedderForSDXLWithCustomWords`` and
``FrozenOpenCLIPEmbedder2WithCustomWords`` under ``sd_models_xl.get_learned_conditioning``), for the diffusers host.

* The prompt is read once into weighted pieces and 77-token chunks (emphasis ``(word:1.2)``, ``BREAK``, 75 tokens a
  chunk: :mod:`lib_profile.prompts.parse`); both encoders see the same token ids, except that the second pads with
  ``!`` (id 0) after the end token (A1111's ``id_pad``; diffusers' ``tokenizer_2``).
* Each encoder gives its penultimate layer's hidden states, not layer-normed (SGM's ``layer: penultimate`` /
  ``layer_idx: 11``); CLIP skip above 2 goes further back in both, as Forge does (A1111 ignores CLIP skip on SDXL by
  default; 1 and 2 mean the same in both).
* Emphasis is applied to each encoder's states apart (each restores its own chunk mean), then the two are
  concatenated per token (768 + 1280 = 2048 on SDXL); chunks are concatenated along the tokens.
* The pooled vector is the second encoder's projected end-token output of the first chunk, unemphasized.
* An empty negative prompt is all zeros, states and pooled (A1111's ``force_zero_embeddings``; diffusers'
  ``force_zeros_for_empty_prompt``).
"""

from __future__ import annotations

from lib_profile.prompts import parse as prompts


class SdxlPromptEncoder:
    """A prompt encoder (:mod:`.scheduled_embeds`) over an SDXL model (:class:`~.sdxl_checkpoint.SDXL`).

    :meth:`encode` gives ``(context (1, 77 * chunks, width 1 + width 2), pooled (1, pooled width))``."""

    def __init__(self, model, clip_skip: int = 1, grad: bool = False):
        """``grad``: keep the autograd graph (the face trainer training the text encoders); off for inference."""
        self.model, self.grad = model, grad
        self.layer = -max(int(clip_skip), 2)  # hidden_states[-2]: the penultimate layer's output

    def chunks(self, text: str) -> int:
        return prompts.chunk_count(self.model.tokenizer, text)

    def token_ids(self, text: str, chunks: int = 1):
        """``(chunks, ids of encoder 1, ids of encoder 2)``: id tensors ``(chunks, 77)``; encoder 2's end with pad
        (0) after the first end token of each chunk."""
        import torch

        tok = self.model.tokenizer
        parts = prompts.padded_chunks(tok, text, chunks)
        ids = torch.tensor([c.ids for c in parts], device=self.model.text_encoder.device)
        pad = getattr(self.model.tokenizer_2, "pad_token_id", None) or 0  # no tokenizer_2: pad with "!" (id 0)
        after_end = (ids == tok.eos_token_id).int().cumsum(1) - (ids == tok.eos_token_id).int() > 0
        return parts, ids, ids.masked_fill(after_end, pad).to(self.model.text_encoder_2.device)

    def encode(self, text: str, chunks: int = 1, zero: bool = False):
        """``(context, pooled)`` of ``text`` padded to ``chunks`` chunks; zeros of those shapes when ``zero``."""
        import torch

        parts, ids, ids_2 = self.token_ids(text, chunks)
        with torch.set_grad_enabled(self.grad):
            out_1 = self.model.text_encoder(ids, output_hidden_states=True)
            out_2 = self.model.text_encoder_2(ids_2, output_hidden_states=True)
        z_1 = prompts.emphasize(out_1.hidden_states[self.layer], parts)
        z_2 = prompts.emphasize(out_2.hidden_states[self.layer], parts).to(z_1.device)
        context = torch.cat([z_1, z_2], dim=-1)
        pooled = out_2.text_embeds[:1].to(z_1.device)
        if zero:
            return torch.zeros_like(context), torch.zeros_like(pooled)
        return context, pooled
