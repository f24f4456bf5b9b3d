"""Identities: one folder per person under ``<data>/identities/<slug>/``.

``identity.json`` (name, class word, token, LoRAs made), ``uploads/`` (the photos as given),
``intake/`` (the intake's report, crops and reference embedding), ``training/<run>/`` (trainer
folders). Outside it, by design of the WebUI: published LoRA files under the LoRA root
(``<Lora>/profile-studio/<slug>/``, so they show in Extra Networks) and portraits under the outputs
root (``<outputs>/profile-studio/<slug>/``). :meth:`IdentityStore.delete` removes all of them.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import unicodedata
from pathlib import Path
from typing import Any, Optional

from lib_profile.hosts.base import HostError
from lib_profile.store.safe import check_name, inside, is_inside as inside_ok

CLASS_WORDS = ("woman", "man", "person")
MAX_PHOTO_BYTES = 25 * 1024 * 1024
MAX_PHOTOS = 40


class NotFound(HostError):
    """The identity, job or file asked for does not exist (HTTP 404)."""


class Conflict(HostError):
    """The request clashes with what exists (HTTP 409): a duplicate name, a job still running."""


def slug_for(name: str) -> str:
    """The folder name for a display name; refuses names that could escape a folder."""
    if not isinstance(name, str) or not name.strip():
        raise HostError("An identity needs a name (letters, digits, spaces, '-' or '_')")
    name = name.strip()
    if len(name) > 40:
        raise HostError("An identity name may have at most 40 characters")
    if any(c in name for c in "/\\") or ".." in name or any(unicodedata.category(c)[0] == "C" for c in name):
        raise HostError(f"The name {name!r} may not contain '/', '\\', '..' or control characters")
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9_-]+", "-", ascii_name.lower()).strip("-_")
    if not slug:
        raise HostError(f"The name {name!r} needs at least one letter or digit")
    return slug


def safe_file_name(name: str) -> str:
    """An uploaded file's name reduced to its last part, with nothing that could escape a folder."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._ -]+", "_", base).strip(" .")
    return base[:100] or "photo"


class IdentityStore:
    def __init__(self, root: str | Path, lora_root: str | Path, outputs_root: str | Path):
        self.root = Path(root)
        self.lora_root = Path(lora_root)
        self.outputs_root = Path(outputs_root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()

    # -- paths: every one built from a slug goes through _under (the slug checked, the path kept inside its root)
    @staticmethod
    def _under(root: Path, slug: str) -> Path:
        """``root / slug``: a slug that could leave the folder (``..``, a separator, NUL...) is refused (400), one
        that is no slug at all is unknown (404), and a slug folder that is a link to elsewhere is refused (400)."""
        check_name(slug, "identity")
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,39}", slug):
            raise NotFound(f"No identity {slug!r}")
        return inside(root, slug, what="identity")

    def folder(self, slug: str) -> Path:
        return self._under(self.root, slug)

    def lora_folder(self, slug: str) -> Path:
        return self._under(self.lora_root, slug)

    def outputs_folder(self, slug: str) -> Path:
        return self._under(self.outputs_root, slug)

    def uploads(self, slug: str) -> list[Path]:
        """The identity's photos: plain files of ``uploads/`` (a link there that points elsewhere is no photo)."""
        folder = self.folder(slug) / "uploads"
        return sorted(p for p in folder.glob("*") if p.is_file() and not p.name.endswith(".partial")
                      and (not p.is_symlink() or inside_ok(p, folder)))

    # -- records
    def _write(self, slug: str, record: dict[str, Any]) -> None:
        path = self.folder(slug) / "identity.json"
        tmp = path.with_name("identity.json.partial")
        tmp.write_text(json.dumps(record, indent=1), "utf-8")
        tmp.replace(path)

    def get(self, slug: str) -> dict[str, Any]:
        path = self.folder(slug) / "identity.json"
        if not path.is_file():
            raise NotFound(f"No identity {slug!r}; create it first")
        record = json.loads(path.read_text("utf-8"))
        intake = self.folder(slug) / "intake" / "report.json"
        record["intake"] = json.loads(intake.read_text("utf-8")) if intake.is_file() else None
        record["photos"] = [p.name for p in self.uploads(slug)]
        return record

    def list(self) -> list[dict[str, Any]]:
        out = []
        for folder in sorted(self.root.iterdir()):
            if (folder / "identity.json").is_file():
                record = json.loads((folder / "identity.json").read_text("utf-8"))
                out.append({k: record.get(k) for k in ("slug", "name", "class_word", "created")} |
                           {"loras": len(record.get("loras", []))})
        return out

    def create(self, name: str, class_word: str = "person", token: str = "ohwx") -> dict[str, Any]:
        if class_word not in CLASS_WORDS:
            raise HostError(f"class_word must be one of {', '.join(CLASS_WORDS)}, not {class_word!r}")
        slug = slug_for(name)
        with self._lock:
            folder = self.root / slug
            if folder.exists():
                raise Conflict(f"An identity named {name!r} ({slug}) already exists; choose another name")
            tmp = self.root / f".{slug}.creating"
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / "uploads").mkdir(parents=True)
            record = {"slug": slug, "name": name.strip(), "class_word": class_word, "token": token,
                      "created": time.time(), "loras": []}
            (tmp / "identity.json").write_text(json.dumps(record, indent=1), "utf-8")
            tmp.rename(folder)
        return self.get(slug)

    # -- photos and intake
    def add_photos(self, slug: str, files: list[tuple[str, bytes]], **intake_options) -> dict[str, Any]:
        """Save the uploads, then run the intake over all of the identity's photos; returns the report.
        The new intake is written beside the old one and swapped in only when complete; when the intake fails,
        the photos of this call are taken out again (a retry does not store them twice)."""
        record = self.get(slug)
        if not files:
            raise HostError("No photos given; upload about 10 photos of the person (JPEG, PNG, WebP, HEIC)")
        if len(files) + len(record["photos"]) > MAX_PHOTOS:
            raise HostError(f"At most {MAX_PHOTOS} photos per identity; delete some or start a new identity")
        for fname, data in files:
            if len(data) > MAX_PHOTO_BYTES:
                raise HostError(f"{safe_file_name(fname)} is over {MAX_PHOTO_BYTES // 2**20} MB; upload a smaller copy")
        uploads = self.folder(slug) / "uploads"
        with self._lock:
            written: list[Path] = []
            try:
                for fname, data in files:
                    name = safe_file_name(fname)
                    dest = inside(uploads, name, what="photo name")
                    n = 1
                    while dest.exists() or dest.is_symlink():
                        dest = inside(uploads, f"{Path(name).stem}-{n}{Path(name).suffix}", what="photo name")
                        n += 1
                    tmp = dest.with_name(dest.name + ".partial")
                    tmp.write_bytes(data)
                    tmp.replace(dest)
                    written.append(dest)
                return self._intake(slug, record, intake_options)
            except BaseException:
                for path in written:
                    path.unlink(missing_ok=True)
                for tmp in uploads.glob("*.partial"):
                    tmp.unlink(missing_ok=True)
                raise

    def remove_photos(self, slug: str, names: list[str], **intake_options) -> Optional[dict[str, Any]]:
        """Remove photos (by their stored names) and check the rest again; returns the new report, or None
        when no photo is left (then the intake is gone too)."""
        record = self.get(slug)
        for name in names:
            check_name(name, "photo name")
        unknown = [n for n in names if n not in record["photos"]]
        if unknown or not names:
            raise NotFound(f"No photo {', '.join(map(repr, unknown or ['']))} of {slug!r}; its photos are: "
                           + (", ".join(record["photos"]) or "none"))
        uploads = self.folder(slug) / "uploads"
        with self._lock:
            kept = self.folder(slug) / ".removed"
            shutil.rmtree(kept, ignore_errors=True)
            kept.mkdir()
            for name in names:  # set aside, so a failed intake can put them back
                inside(uploads, name, what="photo name").rename(kept / name)
            try:
                if len(names) == len(record["photos"]):
                    shutil.rmtree(self.folder(slug) / "intake", ignore_errors=True)
                    report = None
                else:
                    report = self._intake(slug, record, intake_options)
            except BaseException:
                for path in kept.iterdir():
                    path.rename(uploads / path.name)
                raise
            finally:
                shutil.rmtree(kept, ignore_errors=True)
        return report

    def _intake(self, slug: str, record: dict[str, Any], intake_options: dict[str, Any]) -> dict[str, Any]:
        """The intake over all the identity's photos; the old intake stays whole until the new one is: it is set
        aside, and restored on failure."""
        from lib_profile.photos.intake import IntakeOptions, run_intake

        folder = self.folder(slug)
        current, old = folder / "intake", folder / "intake.old"
        shutil.rmtree(old, ignore_errors=True)
        if current.exists():
            current.rename(old)
        opts = IntakeOptions(token=record["token"], class_word=record["class_word"], **intake_options)
        photos = self.uploads(slug)
        try:
            report = run_intake(photos, current, opts)
        except BaseException:
            shutil.rmtree(current, ignore_errors=True)
            if old.exists():
                old.rename(current)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return report

    def intake_dir(self, slug: str) -> Path:
        path = self.folder(slug) / "intake"
        report = path / "report.json"
        if not report.is_file():
            raise HostError("Add photos first: the identity has no intake yet")
        if not json.loads(report.read_text("utf-8")).get("ready"):
            raise HostError("Too few good photos to train; add more (see the intake report's reasons)")
        return path

    # -- LoRAs
    def add_lora(self, slug: str, entry: dict[str, Any]) -> None:
        with self._lock:
            record = self.get(slug)
            record["loras"].append(entry)
            for key in ("intake", "photos"):
                record.pop(key, None)
            self._write(slug, record)

    def latest_lora(self, slug: str) -> Optional[dict[str, Any]]:
        loras = self.get(slug)["loras"]
        return loras[-1] if loras else None

    # -- delete
    def delete(self, slug: str) -> list[str]:
        """Remove the identity's folder, its published LoRAs and its portraits. Returns what was removed."""
        self.get(slug)
        removed = []
        with self._lock:
            for path in (self.lora_folder(slug), self.outputs_folder(slug), self.folder(slug)):
                if path.exists():
                    shutil.rmtree(path)
                    removed.append(str(path))
            for stray in self.root.glob(f".{slug}.*"):
                shutil.rmtree(stray, ignore_errors=True)
        return removed
