"""``python -m lib_profile``: Profile Studio from the command line (the diffusers host, no WebUI).

Exit codes: 0 done, 2 a problem the user can fix (the message says how), 130 interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lib_profile.cli.parser import COMMANDS, build_parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.data_dir:
        import os

        os.environ["PROFILE_STUDIO_DIR"] = str(Path(args.data_dir).expanduser().resolve())
    from lib_profile.hosts.base import HostError, Interrupted

    try:
        return COMMANDS[args.command](args)
    except HostError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, quota, read-only folder: which folder, and exit 2
        import os

        from lib_profile.store.files import is_storage_fault, storage_error

        if not is_storage_fault(exc):
            raise
        folder = getattr(args, "out", None) or os.environ.get("PROFILE_STUDIO_DIR")
        print(f"error: {storage_error(exc, folder)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a full disk as torch ("file write failed") or safetensors ("StorageFull") say it
        from lib_profile.store.files import no_space, out_of_space

        out = getattr(args, "out", None)
        said = str(exc).lower()
        if not (out and any(w in said for w in ("write", "space", "storagefull")) and out_of_space(out)):
            raise
        print(f"error: {no_space(out)}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted):
        print("interrupted", file=sys.stderr)
        return 130
