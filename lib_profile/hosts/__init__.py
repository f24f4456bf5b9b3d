"""Hosts turn one generation request into pixels.

:mod:`.base` is the protocol every host implements (requests, results, the optional capabilities and their
refusals); :mod:`.diffusers` runs it with diffusers (tests, headless use); :mod:`.webui` runs it through the
WebUI's own processing objects (A1111 and Forge flavours). The core imports only :mod:`.base`; prompt reading,
which core and hosts share, is :mod:`lib_profile.prompts`.
"""

from lib_profile.hosts.base import (  # noqa: F401
    ControlUnit,
    FaceDetailRequest,
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
