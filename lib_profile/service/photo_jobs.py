"""Real-photo jobs: restyle a photo (Plug-and-Play), and a photo as the source of explain and edit (a mixin of
:class:`~lib_profile.service.studio.Studio`; :mod:`.attention_jobs` hands a photo source here).

A photo is one of the identity's photos, named as the user sees it (``store.photo_names``), or an upload (its bytes):
either is read with the project's photo reader when the job is asked for (a broken, too big or unreadable file is a
400 then, never a failed job), and an upload is stored whole (atomically, named by its SHA-256) under the identity's
``photo-uploads/`` before the job is queued, so a full disk refuses the request (507) and leaves nothing behind.
The photo's caption (its source prompt) is the user's, else :func:`~.photo_settings.default_caption`.
"""

from __future__ import annotations

from typing import Any, Optional

from lib_profile.hosts.base import HostError, LoraRef
from lib_profile.jobs.manager import JobContext
from lib_profile.service.photo_settings import (DEFAULT_STRENGTH, activation_text, check_caption, default_caption,
                                                injection, photo_settings, settings_dict)
from lib_profile.store.files import atomic_write, storage_errors
from lib_profile.store.identities import MAX_PHOTO_BYTES, NotFound
from lib_profile.store.safe import check_name, inside

LORA_WEIGHT = 0.9  # the person's LoRA in a restyle that keeps the person (as a studio plan has it)
UPLOADS = "photo-uploads"  # the identity's folder of uploaded photos for photo jobs


class PhotoJobs:
    """Restyle jobs, and the photo source of explain and edit jobs."""

    def restyle(self, slug: str, target_prompt: str, photo: Optional[str] = None, upload: Optional[bytes] = None,
                source_prompt: str = "", strength: float = DEFAULT_STRENGTH, keep_person: bool = True,
                settings: Optional[dict[str, Any]] = None) -> dict:
        """Restyle a photo (Plug-and-Play): ``photo`` (one of the identity's photos, by the name the user sees) or
        ``upload`` (a photo's bytes) made into ``target_prompt`` keeping its layout. ``source_prompt``: the
        photo's caption (default: :func:`~.photo_settings.default_caption`). ``strength`` in [0, 1] (0.2): how far
        from the photo (:func:`~.photo_settings.injection`). ``keep_person``: the identity's newest LoRA applied
        (weight 0.9) and the result's identity similarity measured. ``settings``: inversion settings
        (:class:`~.photo_settings.InversionSettings`). Returns the queued job; HostError (400/404) for bad input."""
        self.store.get(slug)
        target = check_caption(target_prompt, "target_prompt")
        if not target:
            raise HostError("Write the target prompt: what the photo should become, e.g. "
                            "\"studio portrait photo of ohwx woman, soft studio light\"")
        injection(strength)
        inversion = photo_settings(settings)
        caption = check_caption(source_prompt, "source_prompt")
        self.check_photo_inversion(target, caption, inversion.negative_prompt)
        source = self._photo_source(slug, photo, upload)
        lora = self._person_lora(slug) if keep_person else None
        params = {"target_prompt": target, "source_prompt": caption or self.photo_caption(slug, lora),
                  "strength": float(strength), "keep_person": bool(keep_person),
                  "lora": {"name": lora["name"], "weight": LORA_WEIGHT} if lora else None,
                  "inversion": settings_dict(inversion)}
        return self._submit_photo_job("restyle", slug, params, source)

    def restyle_prompt(self, slug: Optional[str], tone: str = "warm") -> str:
        """The target prompt a restyle starts from: the studio portrait prompt of the person (their LoRA's
        activation text) with the tone's prompt words, as a studio plan has it."""
        from lib_profile.studio.plan import default_prompt
        from lib_profile.studio.tone import get_tone

        entry = self._lora(slug, None) if slug else None
        words = get_tone(tone, self.data_dir).prompt
        return ", ".join(x for x in (default_prompt(entry["path"] if entry else None), words) if x)

    def photo_caption(self, slug: str, lora: Optional[dict[str, Any]] = None) -> str:
        """The caption of a photo the user gave none for (``lora``: the LoRA entry in use, ``_lora``)."""
        return default_caption(self.store.get(slug)["class_word"], activation_text(lora["path"] if lora else None))

    def check_photo_inversion(self, *prompts: Optional[str]) -> None:
        """HostError (400) unless the host lends its model for photo inversion (``Host.denoiser``) and runs attention
        controllers, and ``prompts`` stay the same at every step (no ``[from:to:when]``, ``[a|b]``, ``AND``)."""
        from lib_profile.prompts.schedule import refuse_scheduled

        if not self.host.photo_inversion:
            raise self.host.unsupported("Inverting a photo (restyle, edit or explain a photo)")
        self.host.check_attention_control("Restyle, edit or explain a photo")
        for text in prompts:
            if text:
                refuse_scheduled(text, "Photo inversion")

    @staticmethod
    def one_source(job: Optional[str], prompt: Optional[str], photo: Optional[str], upload: Optional[bytes]) -> bool:
        """Whether the source is a photo; HostError naming them when more than one source is given."""
        given = [name for name, value in (("job and image", job), ("prompt", prompt), ("photo", photo),
                                          ("photo_image", upload)) if value is not None and value != ""]
        if len(given) > 1:
            raise HostError(f"Give one source, not {' and '.join(given)}: job and image (a studio portrait), prompt "
                            "(a new image), photo (one of the person's photos, by name) or photo_image (a photo "
                            "uploaded)")
        return bool(given) and given[0] in ("photo", "photo_image")

    def photo_names(self, slug: str) -> list[str]:
        """The names the user sees of the identity's photos (those a photo source may name)."""
        return list(self.store.photo_names(slug).values())

    # -- the photo: checked and stored before the job is queued
    def _photo_source(self, slug: str, photo: Optional[str], upload: Optional[bytes]) -> dict[str, Any]:
        """``{"kind": "identity", "file": stored name, "name": shown name}`` of a photo of the identity, checked
        readable; or ``{"kind": "upload", "data": bytes}`` of an upload, checked readable (stored at submission)."""
        if photo is not None and upload is not None:
            raise HostError("Give one photo: photo (one of the person's photos) or photo_image (an upload), not both")
        if upload is not None:
            if len(upload) > MAX_PHOTO_BYTES:
                raise HostError(f"photo_image is over {MAX_PHOTO_BYTES // 2**20} MB")
            from lib_profile.service.photo_runs import read_photo_data

            read_photo_data(upload, "photo_image")
            return {"kind": "upload", "data": bytes(upload)}
        if photo is None or photo == "":
            raise HostError("Choose a photo: one of the person's photos (photo: its name) or upload one (photo_image)")
        check_name(photo, "photo name")
        names = self.store.photo_names(slug)
        stored = next((s for s, shown in names.items() if shown == photo), None) or (photo if photo in names else None)
        if stored is None:
            listed = ", ".join(names.values()) or "none yet (add photos first)"
            raise NotFound(f"This person has no photo {photo!r}; their photos: {listed}")
        from lib_profile.service.photo_runs import read_photo_file

        read_photo_file(self._uploaded(slug, stored), "photo")
        return {"kind": "identity", "file": stored, "name": names[stored]}

    def _uploaded(self, slug: str, stored: str):
        return inside(self.store.folder(slug) / "uploads", stored, what="photo")

    def _submit_photo_job(self, kind: str, slug: str, params: dict[str, Any], source: dict[str, Any]) -> dict:
        """Store an upload (whole, or not at all: a StorageError naming the folder), then queue the job."""
        if source["kind"] == "upload":
            import hashlib

            data = source["data"]
            folder = self.store.folder(slug) / UPLOADS
            name = hashlib.sha256(data).hexdigest()[:32] + ".upload"
            with storage_errors(folder):
                folder.mkdir(exist_ok=True)
                path = inside(folder, name, what="photo")
                if not (path.is_file() and path.stat().st_size == len(data)):
                    atomic_write(path, data)
            source = {"kind": "upload", "file": name}
        return self.jobs.submit(kind, slug, {**params, "photo": source})

    def _photo_image(self, slug: str, source: dict[str, Any]):
        from lib_profile.service.photo_runs import read_photo_file

        if source["kind"] == "upload":
            return read_photo_file(inside(self.store.folder(slug) / UPLOADS, source["file"], what="photo"), "photo")
        return read_photo_file(self._uploaded(slug, source["file"]), "photo")

    def _person_lora(self, slug: str) -> dict[str, Any]:
        entry = self._lora(slug, None)
        if entry is None:
            raise HostError("Keeping the person needs their LoRA, and this person has none yet: train it first "
                            "(2. Train), or turn keep_person off")
        return entry

    def _photo_request(self, slug: str, photo, upload, caption: Optional[str], inversion) -> dict[str, Any]:
        """What explain and edit of a photo share: the photo source, its caption, the inversion settings and the
        identity's newest LoRA (as a new prompt has it), all checked."""
        self.store.get(slug)
        settings = photo_settings(inversion)
        text = check_caption(caption, "caption")
        self.check_photo_inversion(text, settings.negative_prompt)
        lora = self._lora(slug, None)
        source = self._photo_source(slug, photo, upload)
        return {"source": None, "photo_source": source, "caption": text or self.photo_caption(slug, lora),
                "inversion": settings_dict(settings),
                "lora": {"name": lora["name"], "weight": LORA_WEIGHT} if lora else None}

    def _photo_loras(self, ctx: JobContext) -> tuple[list[LoraRef], Optional[str]]:
        """(the LoRAs of a photo job, the person's LoRA file) - the LoRA found again by name when the job runs."""
        want = ctx.params.get("lora")
        if not want:
            return [], None
        entry = self._lora(ctx.identity, want["name"])
        return [LoraRef(path=entry["path"], weight=want["weight"])], entry["path"]

    # -- job handlers
    def _photo_job(self, ctx: JobContext, run) -> dict[str, Any]:
        """The frame every photo job shares: its output folder and attention controls, the photo, the LoRAs (found
        again by name), the host's job around ``run(photo, out, loras, person, control)`` (which returns the run's
        report), and the report's notes published as job messages. Returns ``{"folder": ..., **report}``."""
        out, control = self._attention_run(ctx)
        photo = self._photo_image(ctx.identity, ctx.params["photo"])
        loras, person = self._photo_loras(ctx)
        with self.host.job(ctx.task_id, 1):
            report = run(photo, out, loras, person, control)
        for note in report["notes"]:
            ctx.update(message=note)
        return {"folder": str(out), **report}

    def _restyle(self, ctx: JobContext) -> dict[str, Any]:
        from lib_profile.service.photo_runs import run_restyle

        p = ctx.params
        return self._photo_job(ctx, lambda photo, out, loras, person, control: run_restyle(
            self.host, photo, p["source_prompt"], p["target_prompt"], photo_settings(p["inversion"]), p["strength"],
            out, loras, control, person_lora=person if p.get("keep_person") else None))

    def _explain_photo(self, ctx: JobContext) -> dict[str, Any]:
        from lib_profile.service.photo_runs import run_explain_photo

        p = ctx.params
        layers = tuple(p["layers"]) if p.get("layers") else None
        steps = tuple(p["steps"]) if p.get("steps") else None
        return self._photo_job(ctx, lambda photo, out, loras, _person, control: run_explain_photo(
            self.host, photo, p["caption"], p["words"], photo_settings(p["inversion"]), out, layers, steps, loras,
            control))

    def _edit_photo(self, ctx: JobContext) -> dict[str, Any]:
        from lib_profile.attention.p2p import Edit
        from lib_profile.service.photo_runs import run_edit_photo

        p = ctx.params
        edit = Edit(source=p["caption"], **p["edit"])
        return self._photo_job(ctx, lambda photo, out, loras, _person, control: run_edit_photo(
            self.host, photo, edit, photo_settings(p["inversion"]), out, loras, control))
