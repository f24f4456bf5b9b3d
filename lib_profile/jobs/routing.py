"""Checkpoint routing in the cluster mode: a job goes to a worker that has its checkpoint loaded when one is free.

Each job records the checkpoint it needs: the request's (a training's ``checkpoint``), else the one the submitting
host has selected at submit time; None when the host cannot tell. It is deferred into a Procrastinate *queue* named
after that checkpoint (:func:`queue_for`): ``profile_studio`` for none, ``profile_studio@<stem>`` otherwise (the
file's stem, lower case, so a WebUI title ``model.safetensors [hash]``, a path ``/m/model.safetensors`` and a name
``model`` are one checkpoint on every machine). A worker fetches in two steps (:func:`preferring`): first from the
queue of the checkpoint it has loaded now, and only when that queue is empty from every queue (Procrastinate's
``queues=None``: priority, then age), so it prefers its own checkpoint's jobs and takes the others when it would
otherwise be idle. Nothing is reserved: a job never waits for a particular worker.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any, Callable, Optional

QUEUE = "profile_studio"
MAX_NAME = 100  # characters of the stem kept in a queue name


def checkpoint_key(name: Optional[str]) -> Optional[str]:
    """The checkpoint's name as routing compares it: the file's stem in lower case (``"Model.safetensors [ab12]"``,
    ``"/m/model.safetensors"`` and ``"model"`` -> ``"model"``); None for none."""
    if not name or not str(name).strip():
        return None
    text = str(name).strip()
    if text.endswith("]") and " [" in text:  # a WebUI title's hash
        text = text[: text.rindex(" [")]
    stem = PurePath(text.replace("\\", "/")).name
    for suffix in (".safetensors", ".ckpt", ".pt", ".bin", ".pth", ".gguf"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return stem.lower()[:MAX_NAME] or None


def queue_for(checkpoint: Optional[str]) -> str:
    """The Procrastinate queue of jobs that need ``checkpoint`` (a name, a path or a WebUI title; None: any)."""
    key = checkpoint_key(checkpoint)
    return f"{QUEUE}@{key}" if key else QUEUE


def loaded_checkpoint(host: Any) -> Optional[str]:
    """The checkpoint ``host`` has selected now (its file name), or None when it cannot tell (no model yet, a host
    without the feature)."""
    try:
        return PurePath(str(host.checkpoint_path())).name
    except Exception:  # noqa: BLE001 - routing is a preference: without a name, this worker takes jobs in order
        return None


def preferring(fetch_job: Callable, loaded: Callable[[], Optional[str]]) -> Callable:
    """Procrastinate's ``JobManager.fetch_job`` made to try the queue of ``loaded()``'s checkpoint first, then
    every queue. ``fetch_job(queues, worker_id)`` -> a job or None."""
    async def fetch(queues=None, worker_id=None):
        key = checkpoint_key(loaded())
        if key:
            job = await fetch_job(queues=[queue_for(key)], worker_id=worker_id)
            if job is not None:
                return job
        return await fetch_job(queues=None, worker_id=worker_id)

    return fetch
