"""A cluster worker process for the tests: ``python -m tests.cluster_worker URL [HEARTBEAT_S STALLED_S]`` runs a ClusterJobManager with a
worker and one job kind, ``hold``, until stdin closes. ``hold`` reports stage ``hold`` at 0.3 with a message naming
this process, then waits until the file ``params["until"]`` exists (-> done, result ``{"pid": ..., "taken_over": ...}``) or it is
cancelled (-> cancelled). With ``params["log"]``, it appends ``start PID``, ``stop PID`` (cancelled) and ``done PID``
lines to that file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lib_profile.hosts.base import Interrupted
from lib_profile.jobs.cluster import ClusterJobManager


def _log(ctx, what: str) -> None:
    if ctx.params.get("log"):
        with open(ctx.params["log"], "a") as f:
            f.write(f"{what} {os.getpid()}\n")


def hold(ctx):
    _log(ctx, "start")
    ctx.update(stage="hold", progress=0.3, eta_s=5, message=f"held by pid {os.getpid()}", flush=True)
    until = Path(ctx.params["until"])
    while not until.exists():
        if ctx.cancelled.wait(0.02):
            _log(ctx, "stop")
            raise Interrupted("stopped")
    _log(ctx, "done")
    return {"pid": os.getpid(), "taken_over": ctx.taken_over}


def main() -> None:
    timing = {"heartbeat_s": float(sys.argv[2]), "stalled_s": float(sys.argv[3])} if len(sys.argv) > 3 else {}
    manager = ClusterJobManager(sys.argv[1], {"hold": hold}, worker=True, **timing)
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes it
    manager.shutdown()


if __name__ == "__main__":
    main()
