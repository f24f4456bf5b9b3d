"""Hosts turn one generation request into pixels.

``base`` is the protocol every host implements; ``diffusers_host`` runs it with diffusers (tests,
headless use); ``a1111`` and ``forge`` (later) run it through the WebUI's own processing objects.
"""

from lib_profile.hosts.base import (  # noqa: F401
    ControlUnit,
    Host,
    HostError,
    Img2ImgRequest,
    InpaintRequest,
    Interrupted,
    LoraRef,
    Result,
    RunControl,
    Txt2ImgRequest,
)
