"""The WebUI's options around a pass of ours: overrides put back, and never written to its config file."""

from __future__ import annotations

import contextlib
import types
from typing import Iterator


@contextlib.contextmanager
def restoring_opts(opts, keys) -> Iterator[None]:
    """Put the WebUI's options back exactly as they were after a pass with ``override_settings``, and keep the
    overrides out of its config file meanwhile.

    A1111 1.10.1 and Forge restore only options already in ``opts.data`` (processing.py: ``stored_opts``), so an
    override of a setting the user never saved (e.g. CLIP skip) would stay set for every later generation. And
    while a pass runs, anything that saves the settings (a quicksetting changed in the page, Forge's preset and
    checkpoint handlers) would write our overrides into ``config.json``: ``opts.save`` is wrapped for the pass
    to write the user's values of the overridden keys instead."""
    data = getattr(opts, "data", None)
    if data is None:
        yield
        return
    missing = object()
    saved = {k: data.get(k, missing) for k in list(keys or {})}
    class_save = getattr(type(opts), "save", None)
    patch = callable(class_save) and "save" not in vars(opts)

    def save(filename, *args, **kwargs):
        clean = dict(data)
        for key, value in saved.items():
            if value is missing:
                clean.pop(key, None)
            else:
                clean[key] = value
        return class_save(types.SimpleNamespace(data=clean), filename, *args, **kwargs)  # it writes self.data

    if patch:
        object.__setattr__(opts, "save", save)
    try:
        yield
    finally:
        if patch:
            object.__delattr__(opts, "save")
        for key, value in saved.items():
            if value is missing:
                data.pop(key, None)
            else:
                data[key] = value
