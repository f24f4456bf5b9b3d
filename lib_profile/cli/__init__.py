"""``python -m lib_profile``: Profile Studio from the command line (the diffusers host, no WebUI).

:mod:`.main` runs a command (exit codes: 0 done, 2 a problem the user can fix, 130 interrupted); :mod:`.parser`
holds the options; one module per command group: :mod:`.info_commands` (doctor, tones, poses, download),
:mod:`.intake_command`, :mod:`.train_command`, :mod:`.generate_commands` (generate, txt2img),
:mod:`.attention_commands` (explain, edit), :mod:`.serve_command`; :mod:`.common` what they share.
"""

from lib_profile.cli.main import main
from lib_profile.cli.parser import build_parser
from lib_profile.cli.train_command import lora_name

__all__ = ["build_parser", "lora_name", "main"]
