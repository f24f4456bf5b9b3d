"""Identities: one folder per person under ``<data>/identities/<slug>/``.

``identity.json`` (name, class word, token, LoRAs made), ``uploads/`` (the photos as given),
``intake/`` (the intake's report, crops and reference embedding), ``training/<run>/`` (trainer
folders). Outside it: the LoRA files under the LoRA root (``<root>/<slug>/``: in a WebUI of its own
``<Lora>/profile-studio/``, so they show in Extra Networks; in the cluster mode and ``serve`` the data folder's
``loras/``, which every worker reads; docs/cluster.md) and portraits under the outputs root
(``<outputs>/profile-studio/<slug>/``). :meth:`IdentityStore.delete` removes all of them.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
import time
import unicodedata
from pathlib import Path
from typing import Any, Optional

from lib_profile.hosts.base import HostError
from lib_profile.store.files import atomic_write, storage_errors
from lib_profile.store.safe import check_name, inside, is_inside as inside_ok

CLASS_WORDS = ("woman", "man", "person")
MAX_PHOTO_BYTES = 25 * 1024 * 1024
MAX_PHOTOS = 40


class NotFound(HostError):
    """The identity, job or file asked for does not exist (HTTP 404)."""


class Conflict(HostError):
    """The request clashes with what exists (HTTP 409): a duplicate name, a job still running."""


MAX_NAME_CHARS = 100  # a display name's length
SLUG_CHARS = 40  # a slug's length; see IdentityStore._under
_ALLOWED_FORMAT = {"\u200c", "\u200d"}  # zero-width (non-)joiners: part of Persian, Indic and emoji spellings


def _short_hash(text: str) -> str:
    return hashlib.sha256(unicodedata.normalize("NFC", text).casefold().encode("utf-8")).hexdigest()[:8]


def slug_for(name: str) -> str:
    """The folder (and URL) name for a display name in any script: the name transliterated to ASCII by
    `Unidecode <https://pypi.org/project/Unidecode/>`_, lower case, runs of other characters as ``-``; at most
    40 characters of ``[a-z0-9_-]``, starting with a letter or digit. A plain ASCII name that fits keeps just
    that (``"Anna Li"`` -> ``anna-li``); any other name (other scripts, accents, emoji, over 40) gets ``-`` and 8
    hex digits of a hash of the name (NFC, case-folded), so ``"Анна"`` (``anna-...``) never takes ``"Anna"``'s
    slug, and a name with nothing ASCII left is the hash alone. The same name always gives the same slug.
    Refused (HostError, HTTP 400): no name, over 100 characters, ``/``, ``\\``, ``..``, NUL and other control or
    invisible format characters (bidi overrides)."""
    if not isinstance(name, str) or not name.strip():
        raise HostError("An identity needs a name (letters in any script, digits, spaces, '-' or '_')")
    name = name.strip()
    if len(name) > MAX_NAME_CHARS:
        raise HostError(f"An identity name may have at most {MAX_NAME_CHARS} characters")
    if any(c in name for c in "/\\") or ".." in name or any(
            unicodedata.category(c)[0] == "C" and c not in _ALLOWED_FORMAT for c in name):
        raise HostError(f"The name {name!r} may not contain '/', '\\', '..' or control characters")
    from unidecode import unidecode

    base = re.sub(r"[^a-z0-9_-]+", "-", unidecode(unicodedata.normalize("NFKC", name)).lower()).strip("-_")
    if name.isascii() and base and len(base) <= SLUG_CHARS:
        return base
    base = base[:SLUG_CHARS - 9].rstrip("-_")
    return f"{base}-{_short_hash(name)}" if base else _short_hash(name)


def safe_file_name(name: str) -> str:
    """The name a photo is stored under: the last part of ``name``, transliterated to ASCII (Unidecode), with
    only ``A-Z a-z 0-9 . _ - space`` left (others become ``_``); ``photo`` when nothing is left of the stem."""
    from unidecode import unidecode

    base = re.split(r"[\\/]", name or "")[-1]
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    stem = re.sub(r"[^A-Za-z0-9._ -]+", "_", unidecode(unicodedata.normalize("NFKC", stem))).strip(" ._")[:90]
    ext = re.sub(r"[^A-Za-z0-9]+", "", unidecode(ext))[:10]
    return (stem or "photo") + (f".{ext}" if ext else "")


def shown_file_name(name: str) -> str:
    """The name a user sees for an uploaded photo: the last part of what they sent, in their script, with control
    characters, ``:`` and outer spaces taken out, at most 200 bytes; the stored name when nothing is left."""
    base = unicodedata.normalize("NFC", re.split(r"[\\/]", name or "")[-1])
    base = "".join("_" if c == ":" or unicodedata.category(c)[0] == "C" and c not in _ALLOWED_FORMAT else c
                   for c in base).strip()
    while len(base.encode("utf-8")) > 200:
        base = base[:-1]
    return base if base.strip(".") else safe_file_name(name)


def _numbered(name: str, n: int) -> str:
    """``photo.jpg`` -> ``photo-1.jpg`` (n=1)."""
    stem, dot, ext = name.rpartition(".")
    return f"{stem}-{n}.{ext}" if dot and stem else f"{name}-{n}"


class LoraChanged(Conflict):
    """A LoRA file is not the one its training made: its SHA-256 differs from the one recorded (HTTP 409)."""


class IdentityStore:
    def __init__(self, root: str | Path, lora_root: str | Path, outputs_root: str | Path,
                 local_lora_root: str | Path | None = None):
        """``lora_root``: where LoRAs are written (``<lora_root>/<slug>/``). ``local_lora_root``: a WebUI's own
        ``<Lora>/profile-studio`` when ``lora_root`` is elsewhere (the cluster mode): LoRAs a WebUI trained there
        before are still found there, and :meth:`delete` removes the identity's folder there too."""
        self.root = Path(root)
        self.lora_root = Path(lora_root)
        self.local_lora_root = Path(local_lora_root) if local_lora_root else None
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

    def lora_path(self, slug: str, entry: dict[str, Any]) -> Path:
        """The file of a LoRA ``entry`` (of the record's ``loras``): under the LoRA root, else under the local
        root when it is only there (made before the cluster mode), else the LoRA root's path (which need not
        exist). A file whose SHA-256 differs from the entry's recorded ``sha256`` is :class:`LoraChanged` (409),
        never used; entries recorded before hashes were kept have none and are not checked. UnsafeName (400) for
        a file name that could leave the folder."""
        from lib_profile.store.file_hash import file_sha256

        path = inside(self.lora_folder(slug), entry["file"], what="LoRA file")
        if not path.is_file() and self.local_lora_root is not None:
            local = inside(self._under(self.local_lora_root, slug), entry["file"], what="LoRA file")
            path = local if local.is_file() else path
        want = entry.get("sha256")
        if want and path.is_file():
            got = file_sha256(path)
            if got != want:
                raise LoraChanged(
                    f"The LoRA file {path} of {slug!r} is not the one its training made (SHA-256 {got[:12]}..., "
                    f"recorded {want[:12]}...): it was changed or damaged afterwards, so it is not used. Put the "
                    f"trained file back (a copy whose SHA-256 is {want}, e.g. from a WebUI's "
                    f"Lora/profile-studio folder), or train {slug!r} again")
        return path

    def uploads(self, slug: str) -> list[Path]:
        """The identity's photos: plain files of ``uploads/`` (a link there that points elsewhere is no photo)."""
        folder = self.folder(slug) / "uploads"
        return sorted(p for p in folder.glob("*") if p.is_file() and not p.name.endswith(".partial")
                      and (not p.is_symlink() or inside_ok(p, folder)))

    def photo_names(self, slug: str) -> dict[str, str]:
        """``{stored name: the name the user gave}`` of the identity's photos (``photos.json``; a photo not
        listed there shows its stored name)."""
        path = self.folder(slug) / "photos.json"
        names = json.loads(path.read_text("utf-8")) if path.is_file() else {}
        return {p.name: names.get(p.name, p.name) for p in self.uploads(slug)}

    def _stored_name(self, slug: str, name: str) -> Optional[str]:
        """The stored name of the photo a user names: by the name they see, or by its stored name."""
        names = self.photo_names(slug)
        return next((stored for stored, shown in names.items() if shown == name), None) or (
            name if name in names else None)

    # -- records
    def _write(self, slug: str, record: dict[str, Any]) -> None:
        atomic_write(self.folder(slug) / "identity.json", json.dumps(record, indent=1))

    def get(self, slug: str) -> dict[str, Any]:
        path = self.folder(slug) / "identity.json"
        if not path.is_file():
            raise NotFound(f"No identity {slug!r}; create it first")
        record = json.loads(path.read_text("utf-8"))
        intake = self.folder(slug) / "intake" / "report.json"
        record["intake"] = json.loads(intake.read_text("utf-8")) if intake.is_file() else None
        record["photos"] = list(self.photo_names(slug).values())  # the names the user gave
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
            record = {"slug": slug, "name": name.strip(), "class_word": class_word, "token": token,
                      "created": time.time(), "loras": []}
            try:
                with storage_errors(self.root):
                    (tmp / "uploads").mkdir(parents=True)
                    atomic_write(tmp / "identity.json", json.dumps(record, indent=1))
                    tmp.rename(folder)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)  # nothing half-made stays
                raise
        return self.get(slug)

    # -- photos and intake
    def add_photos(self, slug: str, files: list[tuple[str, bytes]], **intake_options) -> dict[str, Any]:
        """Save the uploads (``files``: ``(name as the user gave it, bytes)``), then run the intake over all of
        the identity's photos; returns the report. Each photo is stored whole (:func:`atomic_write`) under an
        ASCII name (:func:`safe_file_name`); the name the user gave (:func:`shown_file_name`, made unique with
        ``-1``, ``-2``...) is kept in ``photos.json`` and shown in the report and contact sheet. The new intake is
        written beside the old one and swapped in only when complete; when anything fails (a bad photo, a full
        disk: :class:`~lib_profile.store.files.StorageError`), the photos of this call are taken out again, so a
        retry does not store them twice."""
        record = self.get(slug)
        if not files:
            raise HostError("No photos given; upload about 10 photos of the person (JPEG, PNG, WebP, HEIC)")
        if len(files) + len(record["photos"]) > MAX_PHOTOS:
            raise HostError(f"At most {MAX_PHOTOS} photos per identity; delete some or start a new identity")
        for fname, data in files:
            if len(data) > MAX_PHOTO_BYTES:
                raise HostError(f"{safe_file_name(fname)} is over {MAX_PHOTO_BYTES // 2**20} MB; upload a smaller copy")
        uploads = self.folder(slug) / "uploads"
        names_file = self.folder(slug) / "photos.json"
        with self._lock:
            names = self.photo_names(slug)
            before = names_file.read_bytes() if names_file.is_file() else None
            written: list[Path] = []
            try:
                with storage_errors(uploads):
                    for fname, data in files:
                        name = safe_file_name(fname)
                        dest = inside(uploads, name, what="photo name")
                        n = 1
                        while dest.exists() or dest.is_symlink():
                            dest = inside(uploads, _numbered(name, n), what="photo name")
                            n += 1
                        shown = shown_file_name(fname)
                        n, base = 1, shown
                        while shown in names.values():
                            shown, n = _numbered(base, n), n + 1
                        atomic_write(dest, data)
                        written.append(dest)
                        names[dest.name] = shown
                    atomic_write(names_file, json.dumps(names, ensure_ascii=False, indent=1))
                    return self._intake(slug, record, intake_options)
            except BaseException:
                for path in written:
                    path.unlink(missing_ok=True)
                if before is None:
                    names_file.unlink(missing_ok=True)
                else:
                    atomic_write(names_file, before)
                raise

    def remove_photos(self, slug: str, names: list[str], **intake_options) -> Optional[dict[str, Any]]:
        """Remove photos (by the names the user sees, as the report lists them, or by their stored names) and
        check the rest again; returns the new report, or None when no photo is left (then the intake is gone too)."""
        record = self.get(slug)
        for name in names:
            check_name(name, "photo name")
        unknown = [n for n in names if self._stored_name(slug, n) is None]
        if unknown or not names:
            raise NotFound(f"No photo {', '.join(map(repr, unknown or ['']))} of {slug!r}; its photos are: "
                           + (", ".join(record["photos"]) or "none"))
        names = list(dict.fromkeys(self._stored_name(slug, n) for n in names))
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
            with storage_errors(folder):
                report = run_intake(photos, current, opts, names=self.photo_names(slug))
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
        """Remove the identity's folder, its LoRAs (also those under the local LoRA root) and its portraits.
        Returns what was removed."""
        self.get(slug)
        removed = []
        local = [self._under(self.local_lora_root, slug)] if self.local_lora_root is not None else []
        with self._lock:
            for path in (self.lora_folder(slug), *local, self.outputs_folder(slug), self.folder(slug)):
                if path.exists():
                    shutil.rmtree(path)
                    removed.append(str(path))
            for stray in self.root.glob(f".{slug}.*"):
                shutil.rmtree(stray, ignore_errors=True)
        return removed
