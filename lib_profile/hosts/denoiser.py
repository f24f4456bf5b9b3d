"""The denoiser protocol: a host's own loaded model as the few calls that inversion and photo editing need.

Inverting a real photo (DDIM inversion, null-text inversion, Direct Inversion) and editing it again (Plug-and-Play,
Prompt-to-Prompt and DAAM on the photo) need a sampling loop of their own - deterministic DDIM (Song et al., ICLR
2021, eq. 12 with eta = 0) run forwards and backwards, with a per-step negative-prompt embedding and latent
corrections - that no WebUI sampler offers. So a host does not sample here: it lends its model, VAE and text
encoder as a :class:`Denoiser` (``Host.denoiser``), and ``lib_profile.inversion`` runs the loop.

Conventions (shared by every host):

* latents are the VAE's *scaled* latents (times the VAE scaling factor, 0.18215 on SD1.5), ``(batch, 4, h, w)``
  with ``h, w`` = the image's size / 8, in the host's dtype on its device;
* ``t`` is a DDPM timestep in 0..999 (the model's own ``alphas_cumprod`` index), the UNet predicts the noise
  epsilon (SD1.5's ``eps`` parameterisation);
* a conditioning is ``(batch, 77 * chunks, dim)``, the prompt read as the host reads it (emphasis, 75-token chunks,
  CLIP skip), ``<lora:NAME:W>`` tags removed (the host applied them when the denoiser was opened); a family whose
  UNet reads more than attention's keys adds rows that :meth:`Denoiser.eps` splits off (SDXL: one, its pooled text
  vector: ``hosts/diffusers/denoiser.SdxlDenoiser``, ``hosts/webui/denoiser.WebUIDenoiser``), so the loop handles
  one tensor per prompt either way;
* a sampling batch under attention control is laid out ``[negative x images, prompt x images]``: rows ``0..n-1``
  are the images' negative-prompt (unconditional) rows, rows ``n..2n-1`` their prompt rows, in the same order.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Callable, Iterator, Optional

from PIL import Image

#: ``features(step, output) -> output``: called with the feature block's output at each model evaluation of a
#: sampling step (``step`` 0-based); returns it unchanged or with rows replaced.
FeatureHook = Callable[[int, object], object]


class Denoiser(ABC):
    """A host's loaded model (SD1.5 or SDXL), lent for one job (``Host.denoiser`` opens and
    closes it)."""

    #: the model's ``alphas_cumprod`` (1000,), float64 on the CPU: alpha-bar_t of DDPM (Ho et al. 2020, eq. 4)
    alphas_cumprod = None
    device = None
    dtype = None
    #: what the infotext names: ``model``, ``model_hash``, ``loras`` ([{"path", "weight"}] applied),
    #: ``lora_notes`` (LoRA modules that matched no layer); any may be missing
    info: dict = {}

    @abstractmethod
    def encode(self, image: Image.Image):
        """``image`` (RGB, its size a multiple of 8) -> its scaled latent ``(1, 4, H/8, W/8)``: the VAE posterior's
        mean (deterministic), times the scaling factor."""

    @abstractmethod
    def decode(self, latents) -> list[Image.Image]:
        """Scaled latents ``(n, 4, h, w)`` -> n RGB images of ``8h x 8w`` px."""

    @abstractmethod
    def conditioning(self, prompt: str, chunks: int = 1):
        """``prompt`` -> its conditioning ``(1, 77 * max(chunks, own), dim)`` (padded with empty chunks to
        ``chunks``), read as the host reads prompts; a scheduled prompt (``[a:b:when]``) is refused by the caller."""

    @abstractmethod
    def chunks(self, prompt: str) -> int:
        """How many 77-token chunks the host splits ``prompt`` into."""

    @abstractmethod
    def eps(self, latents, t: int, context):
        """The UNet's noise prediction ``(b, 4, h, w)`` for ``latents`` at timestep ``t`` under ``context``
        ``(b, keys, dim)``. Differentiable with respect to ``context`` under ``torch.enable_grad()`` (null-text
        inversion optimises the negative-prompt embedding through it)."""

    @contextlib.contextmanager
    def controlled(self, controller, steps: int, images: int,
                   features: Optional[FeatureHook] = None) -> Iterator[None]:
        """For a sampling run of ``steps`` steps (one :meth:`eps` call per step, batch laid out as the module
        docstring says, of ``images`` images): the attention ``controller`` (``attention.control.Controller``) in
        the UNet's attention layers, and ``features`` on the output of the family's Plug-and-Play feature block
        (``families.ModelFamily.pnp_feature_block``: SD1.5's ``output_blocks.4.0``); both removed after.
        A host without them raises HostError; by default, the base runs plain (neither given) only."""
        if controller is not None or features is not None:
            from lib_profile.hosts.base import HostError

            raise HostError("this host's denoiser runs no attention control or feature injection")
        yield
