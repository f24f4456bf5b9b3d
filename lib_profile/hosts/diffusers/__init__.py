"""The diffusers host: the host protocol on diffusers pipelines, standalone (tests, ``python -m lib_profile``);
SD1.5 and SDXL.

* :mod:`.host` - :class:`~.host.DiffusersHost`;
* :mod:`.checkpoint` - a single-file SD1.5 checkpoint as diffusers models (and back), by :mod:`.ldm_layout`'s
  key mapping; :mod:`.tiny` - the tiny test checkpoint;
* :mod:`.engines` - what differs per model family (loading, pipelines, prompt encoding, size conditioning, what
  is not there yet), chosen by the checkpoint's family; :mod:`.sdxl_checkpoint` - an SGM single-file SDXL
  checkpoint through diffusers' converters (:mod:`.sgm_layout` the other way); :mod:`.sdxl_prompts` - A1111's
  SDXL prompt encoding over both text encoders; :mod:`.tiny_sdxl` - the tiny SDXL-shaped test checkpoint;
* :mod:`.samplers` - the WebUI's sampler names as diffusers schedulers;
* :mod:`.scheduled_embeds` - prompt editing and alternation as per-step conditioning;
* :mod:`.attention` - Explain and Prompt-to-Prompt on diffusers' attention processors;
* :mod:`.masking` - the "only masked" inpaint geometry.

The trainer (:mod:`lib_profile.train`) runs diffusers in any host, so it uses the checkpoint, sampler and
conditioning modules here too; nothing here imports a WebUI.
"""
