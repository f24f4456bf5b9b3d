"""Installs what Profile Studio needs into the WebUI's Python, and nothing the WebUI pins.

The WebUI runs this file in its own process at every start (unless --skip-install). It reads
package metadata only (no imports of heavy packages), so when everything is present it returns in
a fraction of a second. Packages the WebUI pins (torch, gradio, pydantic, fastapi, transformers,
numpy, Pillow, ...) are held at their installed versions with a pip constraints file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lib_profile import deps  # noqa: E402 - after the path tweak; stdlib-only module


def skip_install() -> bool:
    try:
        import launch  # the WebUI's launcher, importable because the WebUI sets PYTHONPATH

        if getattr(getattr(launch, "args", None), "skip_install", False):
            return True
    except Exception:  # noqa: BLE001 - not inside a WebUI, or an older one
        pass
    return "--skip-install" in sys.argv or "--skip-install" in os.environ.get("COMMANDLINE_ARGS", "")


def pip_install(specs: list[str], constraints: list[str]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(constraints) + "\n")
        cfile = f.name
    try:
        cmd = [sys.executable, "-m", "pip", "install", "--prefer-binary", "-c", cfile, *specs]
        print("[Profile Studio] installing:", " ".join(specs), flush=True)
        subprocess.run(cmd, check=True)
    finally:
        os.unlink(cfile)


def main(runner=pip_install) -> int:
    """Each missing package in its own pip run, so one that cannot fit beside the WebUI's pins does not keep the
    others out; what failed is said at the end, with the command to run by hand."""
    if skip_install():
        return 0
    todo = deps.missing()
    if not todo:
        return 0
    constraints = deps.pinned_constraints()
    failed = []
    for need in todo:
        try:
            runner([need.install], constraints)
        except Exception as exc:  # noqa: BLE001 - the WebUI must still start; say what to do
            failed.append((need, exc))
    for need, exc in failed:
        print(f"[Profile Studio] could not install {need.dist} ({need.why}): {exc}\n"
              f"  Install it by hand into the WebUI's Python: pip install \"{need.install}\"", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
