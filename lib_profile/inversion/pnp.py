"""Plug-and-Play diffusion features (Tumanyan et al., "Plug-and-Play Diffusion Features for Text-Driven
Image-to-Image Translation", CVPR 2023).

A photo is translated to a target prompt keeping its layout: the source (the inverted photo, row 0 of each half of
the batch) and the target (row 1) are sampled side by side, and for the first part of the steps the target takes
the source's

* spatial features: the output of decoder layer 4's residual block (``families.ModelFamily.pnp_feature_block``),
  for the first ``feature_injection`` fraction of the steps (the paper's tau_f = 0.8, section 4 and appendix);
* self-attention queries and keys in decoder layers 4-11 (every self-attention of the UNet's output blocks but those
  of the first attention module, decoder layer 3's), for the first ``attention_injection`` fraction (tau_A = 0.5).
  The target row then attends as ``softmax(q_src k_src^T) v_target``: a ``control.Mix`` from the source row,
  computed on the fused attention path. On SDXL the same rule: the decoder's first attention module (10 transformer
  blocks at latent/4) is left alone, its other 26 self-attentions (latent/4 and latent/2) take the source's, as the
  paper's code leaves ``up_blocks[1].attentions[0]`` alone on SD.

The target's negative-prompt row takes the source's negative-prompt row's features and attention alike. With the
source prompt as target and full injection the target is the source (the reconstruction); with no injection it is
a plain generation of the target prompt from the inverted noise.
"""

from __future__ import annotations

from lib_profile.attention.control import Call, Controller, Mix, Site


def attention_module(name: str) -> str:
    """The attention module (spatial transformer) an attention layer belongs to: its path before
    ``.transformer_blocks.`` (``up_blocks.1.attentions.0``, ``output_blocks.3.1``)."""
    return name.split(".transformer_blocks.")[0]


class PlugAndPlay(Controller):
    """Injection into the target rows (row 1 of each half) of a two-image batch ``[neg src, neg tgt, src, tgt]``."""

    def __init__(self, feature_injection: float = 0.8, attention_injection: float = 0.5):
        for name, value in (("feature_injection", feature_injection), ("attention_injection", attention_injection)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1 (a fraction of the steps), not {value}")
        self.feature_injection = feature_injection
        self.attention_injection = attention_injection
        self.steps = 1
        self.first_decoder_module: str | None = None  # decoder layer 3's attention module: its self-attention left alone
        self.injected = {"features": set(), "attention": set()}

    def begin(self, steps, latent_hw):
        self.steps = max(1, steps)
        self.injected = {"features": set(), "attention": set()}

    def _on(self, fraction: float, step: int) -> bool:
        return step < round(fraction * self.steps)

    def changes(self, site: Site, step: int, queries: int) -> bool:
        if site.cross or site.place != "up":
            return False
        module = attention_module(site.name)
        if self.first_decoder_module is None:
            self.first_decoder_module = module  # the sites come in forward order: the first is decoder layer 3's
        if module == self.first_decoder_module or not self._on(self.attention_injection, step):
            return False
        self.injected["attention"].add(step)
        return True

    def mixes(self, call: Call, like) -> list[Mix]:
        return [Mix(rows[1], [(rows[0], None)]) for rows in (call.uncond_rows, call.cond_rows) if len(rows) == 2]

    def features(self, step: int, output):
        """The feature block's output with the target rows (1 and 3) replaced by the source rows' (0 and 2)."""
        if not self._on(self.feature_injection, step) or output.shape[0] != 4:
            return output
        self.injected["features"].add(step)
        out = output.clone()
        out[1], out[3] = output[0], output[2]
        return out

    def summary(self) -> str:
        """``"features 40/50, attention 25/50"``: the steps that had the source's features and attention."""
        return (f"features {len(self.injected['features'])}/{self.steps}, "
                f"attention {len(self.injected['attention'])}/{self.steps}")
