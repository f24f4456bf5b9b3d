"""Files the tab takes in: gradio's upload objects as paths, and waiting until the browser has sent their bytes."""

from pathlib import Path

from lib_profile.hosts.base import HostError


def file_path(f) -> str:
    """The path of an uploaded file: a file object on gradio 3.41, a path on 4.x."""
    return getattr(f, "name", f)


def wait_for_uploads(paths: list[str], timeout: float = 30.0, settle: float = 0.3) -> None:
    """Wait until every uploaded file has its bytes (not empty, size steady over ``settle`` s): a click on Check
    while the browser still uploads read empty files. Raises HostError when they do not arrive in ``timeout``."""
    import os
    import time

    def sizes():
        return [os.path.getsize(p) if os.path.exists(p) else 0 for p in paths]

    deadline = time.monotonic() + timeout
    last = sizes()
    while True:
        time.sleep(settle)
        now = sizes()
        if all(now) and now == last:
            return
        if time.monotonic() > deadline:
            empty = [Path(p).name for p, n in zip(paths, now) if not n]
            raise HostError("The photos are still uploading" + (f" ({', '.join(empty)} not arrived yet)" if empty
                                                                else "") + "; wait until they finish, then check again")
        last = now
