"""The studio's identities: their records, photos, portrait sets and LoRAs (a mixin of
:class:`~lib_profile.service.studio.Studio`, which gives ``store``, ``jobs``, ``host`` and ``defaults``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from lib_profile.store.identities import Conflict, NotFound
from lib_profile.store.safe import JOB_ID, check_name, inside, is_inside


class Identities:
    """Identity records and their files."""

    def create_identity(self, name: str, class_word: str = "person") -> dict[str, Any]:
        return self.store.create(name, class_word)

    def identity(self, slug: str) -> dict[str, Any]:
        record = self.store.get(slug)
        record["jobs"] = [j["id"] for j in self.jobs.list(slug)]
        record["outputs"] = self.outputs(slug)
        return record

    def delete_identity(self, slug: str) -> list[str]:
        """Cancel the identity's jobs, then remove every file and record of it."""
        self.store.get(slug)
        with self._delete_lock:
            for job in self.jobs.list(slug):
                if job["state"] in ("queued", "running"):
                    self.jobs.cancel(job["id"])
                    self.jobs.wait(job["id"], timeout=120)
            loras = [Path(x["file"]).stem for x in self.store.get(slug)["loras"]]
            from lib_profile.ui import tempfiles

            prints = tempfiles.fingerprints([self.store.folder(slug), self.store.outputs_folder(slug)])
            removed = self.store.delete(slug)
            removed += tempfiles.remove_copies(prints)  # what the tab showed or took in, kept by gradio
            self.jobs.forget(slug)
            for name in loras:  # the WebUI's own caches and last parameters name them too
                removed += [f"{place}: {name}" for place in self.host.forget_lora(name)]
            if loras:
                self.host.lora_list_changed()
        return removed

    def add_photos(self, slug: str, files: list[tuple[str, bytes]]) -> dict[str, Any]:
        if self.jobs.busy_with(slug):
            raise Conflict("This identity has a job queued or running; add photos when it has finished")
        return self.store.add_photos(slug, files, **self.intake_options())

    def remove_photos(self, slug: str, names: list[str]) -> Optional[dict[str, Any]]:
        """Remove some of the identity's photos and check the rest again (None: no photo left)."""
        if self.jobs.busy_with(slug):
            raise Conflict("This identity has a job queued or running; remove photos when it has finished")
        return self.store.remove_photos(slug, names, **self.intake_options())

    def intake_options(self) -> dict[str, Any]:
        min_photos = self.defaults().get("min_photos")
        if not min_photos:
            return {}
        from lib_profile.photos.checks import Thresholds

        return {"thresholds": Thresholds(min_photos=int(min_photos))}

    def current_job(self, slug: str) -> Optional[dict[str, Any]]:
        """The identity's job that is queued or running, else its newest job (None: it has had none)."""
        jobs = self.jobs.list(slug)
        return next((j for j in jobs if j["state"] in ("queued", "running")), jobs[0] if jobs else None)

    def outputs(self, slug: str) -> list[dict[str, Any]]:
        """The portrait sets made for an identity, newest first."""
        root = self.store.outputs_folder(slug)
        sets = []
        found = [f for f in root.glob("*/result.json") if is_inside(f, root)]  # not a link to elsewhere
        for folder in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True):
            result = json.loads(folder.read_text("utf-8"))
            sets.append({"job": folder.parent.name, "images": [i["file"] for i in result["images"]],
                         "created": folder.stat().st_mtime})
        return sets

    def output_file(self, slug: str, job_id: str, name: str) -> Path:
        """A file of a portrait set. Refused (400): a slug, job id or name that could leave the folder, or a link
        to elsewhere (see :mod:`lib_profile.store.safe`); unknown (404): a job id that is not one, a missing file."""
        check_name(job_id, "job id")
        if not JOB_ID.fullmatch(job_id):
            raise NotFound(f"No job {job_id!r}")
        path = inside(self.store.outputs_folder(slug), job_id, name, what="file name")
        if not path.is_file():
            raise NotFound(f"No file {name!r} in job {job_id}")
        return path

    def identity_file(self, slug: str, which: str) -> Path:
        files = {"contact_sheet": self.store.folder(slug) / "intake" / "contact_sheet.png"}
        path = files.get(which)
        if path is None or not path.is_file():
            raise NotFound(f"No {which} for identity {slug!r}")
        return path

    def _lora(self, slug: str, name: Optional[str]) -> Optional[dict[str, Any]]:
        loras = self.store.get(slug)["loras"]
        if name:
            check_name(name, "LoRA name")
            entry = next((x for x in loras if x["name"] == name), None)
            if entry is None:
                raise NotFound(f"Identity {slug!r} has no LoRA {name!r}")
        else:
            entry = loras[-1] if loras else None
        if entry is not None:
            entry = {**entry, "path": str(self.store.lora_path(slug, entry))}  # checked by its SHA-256
        return entry
