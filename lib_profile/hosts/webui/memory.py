"""Giving memory back to the system once the WebUI's model is dropped (a CPU-only WebUI during training)."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys


def release_freed_memory() -> None:
    """Collect garbage, then ask glibc to return its freed heap pages to the system (``malloc_trim(3)``): without
    that, the dropped model's ~2 GB stay in the process (measured in a real A1111 on a CPU: the process fell from
    5.4 GB to only 3.1 GB while training). Nothing more where the C library is not glibc."""
    gc.collect()
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        pass
