"""Real photos back to noise and forwards again: DDIM, null-text and Direct Inversion, and the edits that run on an
inverted photo (Plug-and-Play restyling, Prompt-to-Prompt and DAAM on a photo). The host lends its model as a
``hosts.denoiser.Denoiser``; the sampling loop is ours (``inversion.sampling``)."""
