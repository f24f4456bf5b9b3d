"""The trainer's event stream (JSON lines the extension reads) and its cancel signal (SIGTERM or a file)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import TextIO


class Events:
    """JSON lines, one per event, to a stream (stdout) or appended to a file the extension reads."""

    def __init__(self, sink: TextIO | str | Path | None):
        self._own = isinstance(sink, (str, Path))
        self._out = open(sink, "a", encoding="utf-8") if self._own else sink

    def __call__(self, event: str, **data) -> None:
        if self._out is None:
            return
        self._out.write(json.dumps({"event": event, "time": round(time.time(), 3), **data}) + "\n")
        self._out.flush()

    def close(self) -> None:
        if self._own and self._out:
            self._out.close()


class Cancel:
    """Set by SIGTERM or by a cancel file appearing; checked once per step."""

    def __init__(self, cancel_file: Path):
        self.file = cancel_file
        self.flag = False
        self._old = None

    def install(self) -> None:
        try:
            self._old = signal.signal(signal.SIGTERM, self._on_signal)
        except ValueError:  # not the main thread (tests): the cancel file still works
            self._old = None

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)

    def _on_signal(self, *_):
        self.flag = True

    def __bool__(self) -> bool:
        return self.flag or self.file.exists()
