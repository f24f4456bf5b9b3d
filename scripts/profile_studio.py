"""Profile Studio's entry point for the WebUI: registers the tab and the API routes.

Loaded as a bare module; the extension folder is on ``sys.path`` only during this import
(A1111), so our package is imported here at the top. The logic lives in ``lib_profile.webui``.
"""

from modules import script_callbacks

from lib_profile.webui import register

script_callbacks.on_ui_tabs(register.ui_tabs)
script_callbacks.on_app_started(register.app_started)
script_callbacks.on_ui_settings(register.ui_settings)
