"""Profile Studio: studio profile photos from a few selfies, inside the Stable Diffusion WebUI.

This package is the host-neutral core. It never imports the WebUI's ``modules`` at module top:
everything that touches the WebUI lives in functions under ``lib_profile.webui`` (registration) and
``lib_profile.hosts.webui`` (the WebUI host) and is imported only when the WebUI calls it.
"""

__version__ = "0.1.0"
EXTENSION_NAME = "Profile Studio"
API_PREFIX = "/sdapi/v1/profile-studio"
