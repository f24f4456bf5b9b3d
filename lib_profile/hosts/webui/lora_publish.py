"""A LoRA from outside a WebUI's Lora folder published into ``<Lora>/profile-studio/``, checked by SHA-256.

In the cluster mode (docs/cluster.md) a LoRA lives once, in the shared data folder (``<data>/loras/<slug>/``);
each WebUI worker that generates with it first copies it into its own Lora folder, where the WebUI finds it by its
file stem. The copy is made beside its place under a temporary dot name ending ``.partial`` (which the WebUI does
not list), hashed while written and moved into place with ``os.replace`` only when its SHA-256 is the source's: a
half-written or damaged file is never visible. A copy already there is used when its SHA-256 is the source's,
and replaced when not (an outdated or damaged copy). That the source itself is the file its training made is
checked before, against the hash recorded with it (:meth:`~lib_profile.store.identities.IdentityStore.lora_path`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from lib_profile.hosts.base import HostError, LoraRef
from lib_profile.store.file_hash import file_sha256
from lib_profile.store.files import storage_errors
from lib_profile.store.safe import check_name, inside, is_inside

LORA_SUBFOLDER = "profile-studio"
CHUNK = 1 << 20


def publish(lora: LoraRef, lora_dir: Path) -> tuple[LoraRef, bool]:
    """``(lora as the WebUI finds it, whether a file was written)``: ``lora`` itself when its file lies in
    ``lora_dir`` (links followed), else ``<lora_dir>/profile-studio/<file name>`` holding the same bytes.
    HostError: the source is missing, or changed while it was copied; UnsafeName (400): a file name that could
    leave the folder, or a ``profile-studio`` folder or copy that is a link to elsewhere; StorageError: a full
    disk (nothing half-written is left)."""
    src = Path(lora.path)
    if is_inside(src, lora_dir):
        return lora, False
    name = check_name(src.name, "LoRA file name")
    folder = inside(lora_dir, LORA_SUBFOLDER, what="LoRA folder")
    dest = inside(folder, name, what="LoRA file name")
    try:
        want = file_sha256(src)
    except FileNotFoundError:
        raise HostError(f"The LoRA file {src} does not exist (in the cluster mode every worker must see the shared "
                        "data folder at the same path); check the folder, or train the identity again") from None
    published = LoraRef(str(dest), lora.weight)
    if dest.is_file() and not dest.is_symlink() and file_sha256(dest) == want:
        return published, False
    with storage_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name[:80]}.", suffix=".partial", dir=folder)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, open(src, "rb") as source:
                for block in iter(lambda: source.read(CHUNK), b""):
                    digest.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != want:
                raise HostError(f"The LoRA file {src} changed while it was copied into {folder}; try again")
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return published, True


def unpublish(name: str, lora_dir: Path) -> list[str]:
    """Remove the copy of the LoRA ``name`` (its file stem) that :func:`publish` made, if any; returns what was
    removed. A name that could leave the folder removes nothing."""
    try:
        path = inside(lora_dir, LORA_SUBFOLDER, check_name(f"{name}.safetensors", "LoRA file name"), what="LoRA file")
    except HostError:
        return []
    if path.is_file() and not path.is_symlink():
        path.unlink()
        return [f"published copy {path}"]
    return []
