"""Drive two already running WebUIs (or ``serve`` processes) that share one Profile Studio job queue on
PostgreSQL (docs/cluster.md), over HTTP, and print a table of what each step did.

    python tests/real_webui/cluster_check.py --front http://127.0.0.1:7860 --worker http://127.0.0.1:7862

``--front`` must have been started with ``--profile-studio-queue URL --profile-studio-no-worker`` (``serve``:
``--queue URL --no-worker``) and ``--worker`` with the same queue URL and data folder (``--profile-studio-dir``)
and without ``--no-worker``: every job sent to the front can then only have run on the worker. Steps: both
answer; an identity made and six sample selfies uploaded through the front; a short training sent to the front,
its progress read through BOTH processes while it runs, its end and LoRA read through the front; a portrait with
that LoRA, explained (DAAM) and edited (Prompt-to-Prompt), all sent to the front; a long training sent to the
front and cancelled through the front (it runs on the worker); the identity deleted through the worker and
gone on the front. Exit status 0 when no step failed. It builds and starts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.real_webui.smoke import SLUG, TRAIN, Smoke  # noqa: E402 - after the path tweak


class ClusterCheck(Smoke):
    def __init__(self, front: str, worker: str, auth: Optional[str] = None, timeout: float = 1800.0,
                 tone: str = "neutral"):
        super().__init__(front, auth=auth, timeout=timeout, tone=tone)
        self.worker = Smoke(worker, auth=auth, timeout=timeout, tone=tone)

    def both_answer(self) -> str:
        return f"front {self.version()}; worker {self.worker.version()}"

    def train_elsewhere(self) -> str:
        """A training sent to the front (which runs nothing): progress read on both while it runs, its end on the
        front."""
        body = {**TRAIN, "steps": 8, "save_every": 4, "validate_every": 8}
        job = self.ok(self.http.post(f"{self.base}/identities/{SLUG}/train", json=body), 202)
        seen: dict[str, set] = {"front": set(), "worker": set()}
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            on_front = self.ok(self.http.get(f"{self.base}/jobs/{job['id']}"))
            on_worker = self.ok(self.worker.http.get(f"{self.worker.base}/jobs/{job['id']}"))
            for where, view in (("front", on_front), ("worker", on_worker)):
                if view["state"] == "running":
                    seen[where].add((view.get("stage"), round(view.get("progress") or 0, 2)))
            if on_front["state"] not in ("queued", "running"):
                break
            time.sleep(1)
        if on_front["state"] != "done":
            raise AssertionError(f"training {on_front['state']}: {on_front.get('error')}")
        if not seen["front"] or not seen["worker"]:
            raise AssertionError(f"progress not seen on both while running: {seen}")
        self.state["lora"] = on_front["result"]["lora"]
        return (f"done on the worker; {len(seen['front'])} progress states read on the front, "
                f"{len(seen['worker'])} on the worker; LoRA {self.state['lora']}")

    def cancel_through_front(self) -> str:
        body = {**TRAIN, "steps": 400, "save_every": 400, "validate_every": 400, "log_every": 1}
        job = self.ok(self.http.post(f"{self.base}/identities/{SLUG}/train", json=body), 202)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            view = self.ok(self.worker.http.get(f"{self.worker.base}/jobs/{job['id']}"))
            if view["state"] == "running" and (view.get("progress") or 0) > 0:
                break
            if view["state"] not in ("queued", "running"):
                raise AssertionError(f"the long training ended {view['state']} before the cancel")
            time.sleep(1)
        sent = time.monotonic()
        self.ok(self.http.post(f"{self.base}/jobs/{job['id']}/cancel"))
        while time.monotonic() < deadline:
            view = self.ok(self.http.get(f"{self.base}/jobs/{job['id']}"))
            if view["state"] not in ("queued", "running"):
                break
            time.sleep(1)
        if view["state"] != "cancelled":
            raise AssertionError(f"ended {view['state']}, not cancelled")
        return f"cancelled {time.monotonic() - sent:.0f} s after the cancel, at progress {view.get('progress')}"

    def delete_on_worker(self) -> str:
        self.ok(self.worker.http.delete(f"{self.worker.base}/identities/{SLUG}"))
        code = self.http.get(f"{self.base}/identities/{SLUG}").status_code
        if code != 404:
            raise AssertionError(f"the front still answers {code} for the deleted identity")
        return "gone on the front too"

    def run(self) -> int:
        steps = [("both answer", self.both_answer), ("identity (front)", self.identity),
                 ("upload (front)", self.upload), ("train: sent to front, run on worker", self.train_elsewhere),
                 ("portrait (front)", self.generate), ("explain (front)", self.explain), ("edit (front)", self.edit),
                 ("cancel through front", self.cancel_through_front), ("delete (worker)", self.delete_on_worker)]
        for name, step in steps:
            self.step(name, step)
        return self.table()


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--front", required=True, help="a front only (--profile-studio-no-worker)")
    p.add_argument("--worker", required=True, help="a worker on the same queue and data folder")
    p.add_argument("--auth", help="USER:PASS of --api-auth, when set")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds a job may take (a hang bound)")
    p.add_argument("--tone", default="neutral")
    args = p.parse_args(argv)
    return ClusterCheck(args.front, args.worker, auth=args.auth, timeout=args.timeout, tone=args.tone).run()


if __name__ == "__main__":
    sys.exit(main())
