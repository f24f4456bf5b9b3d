"""The studio as a service: identities, photos, training and generation jobs, on one host.

The API routes and the tab both call this; it runs the same in the WebUI (WebUI host, LoRAs in the
WebUI's Lora folder, portraits in its outputs folder) and standalone (diffusers host, all under the
data folder). Data flows one way: photos -> intake -> LoRA -> plan -> portraits -> result.

:class:`Studio` composes one part per kind of work: :mod:`.identities` (records, photos, files),
:mod:`.training` (train and resume jobs, the trainer process), :mod:`.publish` (the LoRA where the WebUI
lists it), :mod:`.portraits` (generate jobs), :mod:`.attention_jobs` (explain and edit jobs) and :mod:`.photo_jobs`
(restyle a real photo; a photo as the source of explain and edit).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Optional

from lib_profile import flow, paths
from lib_profile.hosts.base import Host
from lib_profile.jobs.db import JobDB
from lib_profile.jobs.manager import JobContext, JobManager
from lib_profile.store.identities import IdentityStore
from lib_profile.service.attention_jobs import AttentionJobs
from lib_profile.service.identities import Identities
from lib_profile.service.photo_jobs import PhotoJobs
from lib_profile.service.portraits import Portraits
from lib_profile.service.publish import Publishing
from lib_profile.service.training import Training
from lib_profile.store.files import storage_errors


class Studio(Identities, Training, Publishing, Portraits, AttentionJobs, PhotoJobs):
    """The studio on one host: every method the routes, the tab, the CLI and :mod:`lib_profile.flow` call."""

    def __init__(self, host: Host, data_dir: str | Path | None = None, lora_root: str | Path | None = None,
                 outputs_root: str | Path | None = None, defaults: Optional[Callable[[], dict[str, Any]]] = None,
                 queue: Optional[str] = None, worker: bool = True, worker_timeout_s: float = 30.0,
                 local_lora_root: str | Path | None = None):
        """``defaults()``: the user's settings (WebUI Settings -> Profile Studio): ``train_steps``,
        ``min_photos``, ``detail_engine``; read at each use, so changes apply at once.

        ``queue``: None (default) keeps the jobs in this process and ``jobs.sqlite3`` under the data folder; a
        ``postgresql://`` URL makes this studio one of a cluster (docs/cluster.md): job records and queue in that
        database, the data folder shared by every member; ``worker=False`` then makes it a front only (it
        submits, lists and cancels; other processes run the jobs); ``worker_timeout_s``: after how many seconds
        without a heartbeat a worker's running job is taken up by another. Raises QueueUnreachable (a HostError)
        when the database cannot be reached.

        ``lora_root``: where trained LoRAs are written (``<lora_root>/<slug>/``; default the data folder's
        ``loras/``). ``local_lora_root``: a WebUI's own ``<Lora>/profile-studio`` when ``lora_root`` is the shared
        one (cluster mode): LoRAs trained there before are still found, deleting an identity removes its folder
        there too, and the host publishes the shared files into its Lora folder, checked by SHA-256."""
        self.host = host
        self.defaults = defaults or dict
        self.data_dir = paths.data_dir(data_dir)
        self.store = IdentityStore(self.data_dir / "identities", lora_root or self.data_dir / "loras",
                                   outputs_root or self.data_dir / "outputs", local_lora_root)
        handlers = {"train": self._storage_guard(self._train, self.store.folder),
                    "generate": self._storage_guard(self._generate, self.store.outputs_folder),
                    "explain": self._storage_guard(self._explain, self.store.outputs_folder),
                    "edit": self._storage_guard(self._edit, self.store.outputs_folder),
                    "restyle": self._storage_guard(self._restyle, self.store.outputs_folder),
                    "portraits": self._storage_guard(lambda ctx: flow.run(self, ctx), self.store.folder)}
        if queue:
            from lib_profile.jobs.cluster import ClusterJobManager
            from lib_profile.jobs.routing import loaded_checkpoint

            # each job records the checkpoint selected here at submit (or its request's); this worker prefers those
            # of the checkpoint it has selected when it looks for a job (docs/cluster.md, routing)
            self.jobs = ClusterJobManager(queue, handlers, worker=worker, stalled_s=worker_timeout_s,
                                          heartbeat_s=max(0.2, worker_timeout_s / 3),
                                          checkpoint=lambda: loaded_checkpoint(host))
        else:
            self.jobs = JobManager(JobDB(self.data_dir / "jobs.sqlite3"), handlers)
        self._delete_lock = threading.Lock()
        self._end_orphans(self.jobs.interrupted_at_start)

    @staticmethod
    def _storage_guard(handler: Callable[[JobContext], dict], folder: Callable[[str], Path]):
        """``handler`` with a full disk (or quota, read-only, no rights) as a failure that names the folder
        needing space (the file's folder, else ``folder(identity)``) rather than a bare ``OSError``."""
        def run(ctx: JobContext) -> dict:
            with storage_errors(folder(ctx.identity)):
                return handler(ctx)
        return run

    def close(self) -> None:
        self.jobs.shutdown()
        self.jobs.db.close()

    def portraits(self, name: str, files: list[tuple[str, bytes]], **kwargs: Any) -> dict[str, Any]:
        """The whole flow in one job: a new identity ``name`` from ``files``, its LoRA, its portraits
        (:mod:`lib_profile.flow`)."""
        return flow.start(self, name, files, **kwargs)
