"""Publishing a trained LoRA where the WebUI lists it (a mixin of :class:`~lib_profile.service.studio.Studio`)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from lib_profile.hosts.base import HostError, LoraRef
from lib_profile.store.file_hash import file_sha256
from lib_profile.store.files import atomic_write


class Publishing:
    """Copies a training run's LoRA into the LoRA root and records its SHA-256."""

    def _publish(self, slug: str, out: Path, report: dict[str, Any]) -> dict[str, Any]:
        """Copy the LoRA (and what travels with it) into the LoRA root, where the WebUI lists it (or, in the cluster
        mode, where every worker reads it: the host publishes it into its own Lora folder); the entry recorded
        holds the file's ``sha256`` (64 hex digits)."""
        from lib_profile.lora.apply import read_metadata

        record = self.store.get(slug)
        src = out / report["file"]
        dest_dir = self.store.lora_folder(slug)
        dest_dir.mkdir(parents=True, exist_ok=True)
        stem = src.stem
        copies = [(src, dest_dir / src.name)]
        identity = out / f"{stem}.identity.json"
        if identity.is_file():
            copies.append((identity, dest_dir / identity.name))
        sheet = out / (report.get("contact_sheet") or "")
        if report.get("contact_sheet") and sheet.is_file():
            copies.append((sheet, dest_dir / f"{stem}.preview.png"))
        for a, b in copies:
            tmp = b.with_name(b.name + ".partial")
            shutil.copyfile(a, tmp)
            tmp.replace(b)
        digest = file_sha256(dest_dir / src.name)  # recorded: every later use (and a worker's copy) is checked by it
        if digest != file_sha256(src):
            raise HostError(f"The LoRA copied to {dest_dir / src.name} differs from the trained {src} (a storage "
                            "fault?); free or check that folder's disk and resume the training")
        meta = read_metadata(dest_dir / src.name)
        activation = meta.get("profile_studio_activation_text", f"{record['token']} {record['class_word']}")
        atomic_write(dest_dir / f"{stem}.json", json.dumps({
            "description": f"Profile Studio face LoRA of {record['name']}", "sd version": "SD1",
            "activation text": activation, "preferred weight": 0.9, "notes": "",
        }, indent=1, ensure_ascii=False))
        entry = {"name": stem, "file": src.name, "created": time.time(), "activation_text": activation,
                 "identity_similarity": report["choice"].get("identity_similarity"), "run": out.name,
                 "sha256": digest}
        self.store.add_lora(slug, entry)
        # a WebUI that writes LoRAs to the shared folder (cluster mode) shows this one at once too
        self.host.publish_lora(LoraRef(str(dest_dir / src.name)))
        self.host.lora_list_changed()  # listed in the WebUI (Extra Networks, /sdapi/v1/loras) at once
        return entry
