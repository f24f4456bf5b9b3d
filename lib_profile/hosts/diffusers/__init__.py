"""The diffusers host: the host protocol on diffusers pipelines, standalone (tests, ``python -m lib_profile``).

* :mod:`.host` - :class:`~.host.DiffusersHost`;
* :mod:`.checkpoint` - a single-file SD1.5 checkpoint as diffusers models (and back), by :mod:`.ldm_layout`'s
  key mapping; :mod:`.tiny` - the tiny test checkpoint;
* :mod:`.samplers` - the WebUI's sampler names as diffusers schedulers;
* :mod:`.scheduled_embeds` - prompt editing and alternation as per-step conditioning;
* :mod:`.attention` - Explain and Prompt-to-Prompt on diffusers' attention processors;
* :mod:`.masking` - the "only masked" inpaint geometry.

The trainer (:mod:`lib_profile.train`) runs diffusers in any host, so it uses the checkpoint, sampler and
conditioning modules here too; nothing here imports a WebUI.
"""
