"""The ``python -m lib_profile`` argument parser: the global options and every command's, in help order, and the
function that runs each command (``COMMANDS``)."""

from __future__ import annotations

import argparse

from lib_profile.cli import attention_commands, generate_commands, info_commands, intake_command, serve_command
from lib_profile.cli import photo_commands, train_command

# command name -> the function that runs it (its args -> exit code)
COMMANDS = {"doctor": info_commands.cmd_doctor, "txt2img": generate_commands.cmd_txt2img,
            "intake": intake_command.cmd_intake, "download": info_commands.cmd_download,
            "train": train_command.cmd_train, "tones": info_commands.cmd_tones, "poses": info_commands.cmd_poses,
            "generate": generate_commands.cmd_generate, "serve": serve_command.cmd_serve,
            "explain": attention_commands.cmd_explain, "edit": attention_commands.cmd_edit,
            "restyle": photo_commands.cmd_restyle}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib_profile", description="Profile Studio without a WebUI.")
    parser.add_argument("--data-dir", help="where Profile Studio keeps its data and caches "
                        "(default: $PROFILE_STUDIO_DIR or ~/.local/share/profile-studio)")
    sub = parser.add_subparsers(dest="command", required=True)
    info_commands.add_doctor_parser(sub)
    intake_command.add_intake_parser(sub)
    train_command.add_train_parser(sub)
    generate_commands.add_generate_parser(sub)
    attention_commands.add_explain_parser(sub)
    attention_commands.add_edit_parser(sub)
    photo_commands.add_restyle_parser(sub)
    serve_command.add_serve_parser(sub)
    info_commands.add_tones_parser(sub)
    info_commands.add_poses_parser(sub)
    info_commands.add_download_parser(sub)
    generate_commands.add_txt2img_parser(sub)
    return parser
