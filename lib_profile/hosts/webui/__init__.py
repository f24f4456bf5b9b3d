"""The WebUI host: Profile Studio inside a running A1111 1.10.1 or Forge, through the WebUI's own objects.

* :mod:`.host` - :class:`~.host.WebUIHost`, the host protocol on the WebUI's processing objects;
* :mod:`.flavours` - what differs between the WebUIs (:mod:`.a1111`, :mod:`.forge`), given to the host by
  :func:`~.flavours.detect_flavour`;
* :mod:`.processing` - processing kwargs and the filtered script runner; :mod:`.controlnet` - ControlNet model
  names and units' images; :mod:`.adetailer` - the face detail pass as ADetailer's arguments;
* :mod:`.attention` (A1111) and :mod:`.forge_attention` - Explain and Prompt-to-Prompt in the WebUI's UNet;
* :mod:`.faults` (what a pass really did), :mod:`.progress`, :mod:`.options`, :mod:`.loras`, :mod:`.memory`,
  :mod:`.model_family` - the WebUI's state, read and restored.

Only this package (and :mod:`lib_profile.webui`, the registration) imports the WebUI's ``modules``, and only inside
functions, so it imports without a WebUI (tests use the stand-ins in ``tests/standins``).
"""
