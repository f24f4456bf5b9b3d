"""Generate jobs: a studio portrait set of an identity, checked before it is queued, and its job handler
(a mixin of :class:`~lib_profile.service.studio.Studio`)."""

from __future__ import annotations

import json
from typing import Any, Optional

from lib_profile.hosts.base import HostError, Interrupted, RunControl
from lib_profile.jobs.manager import JobContext
from lib_profile.store.identities import NotFound
from lib_profile.store.files import atomic_write, storage_errors
from lib_profile.store.safe import inside


class Portraits:
    """Generate jobs and the plans and seeds of the portraits they made."""

    def generate(self, slug: str, pose: Optional[str] = None, tone: str = "warm", count: int = 4, seed: int = -1,
                 prompt: Optional[str] = None, switches: Optional[dict[str, bool]] = None,
                 pose_photo: Optional[bytes] = None, lora: Optional[str] = None, lora_weight: float = 0.9,
                 settings: Optional[dict[str, Any]] = None, detail_engine: Optional[str] = None) -> dict[str, Any]:
        self.store.get(slug)
        entry = self._lora(slug, lora)
        params = self.check_generate(pose, tone, count, seed, prompt, switches, pose_photo, entry, lora_weight,
                                     settings, detail_engine)
        if pose_photo is not None:
            params["pose_photo_file"] = self._save_pose_photo(slug, pose_photo)
        return self.jobs.submit("generate", slug, params)  # only now: the job's every input is complete

    def _save_pose_photo(self, slug: str, data: bytes) -> str:
        """Check a pose reference photo and store it whole (:func:`atomic_write`) under the identity's
        ``pose-photos/`` (named by its SHA-256, so sending it again stores nothing new) before its job is queued;
        returns the file name. A photo that cannot be read is a HostError (400); a full disk a StorageError (507)."""
        import hashlib

        from lib_profile.photos.reading import read_photo_bytes

        read = read_photo_bytes(data, "pose_photo")
        if read.reason is not None:
            raise HostError(f"pose_photo: {read.reason.message}")
        folder = self.store.folder(slug) / "pose-photos"
        name = hashlib.sha256(data).hexdigest()[:32] + ".upload"
        with storage_errors(folder):
            folder.mkdir(exist_ok=True)
            path = inside(folder, name, what="pose photo")
            if not (path.is_file() and path.stat().st_size == len(data)):
                atomic_write(path, data)
        return name

    def check_generate(self, pose: Optional[str] = None, tone: str = "warm", count: int = 4, seed: int = -1,
                       prompt: Optional[str] = None, switches: Optional[dict[str, bool]] = None,
                       pose_photo: Optional[bytes] = None, lora: Optional[dict[str, Any]] = None,
                       lora_weight: float = 0.9, settings: Optional[dict[str, Any]] = None,
                       detail_engine: Optional[str] = None) -> dict[str, Any]:
        """A generate job's parameters, checked now, so a bad pose, tone or setting is a 400, not a failed job.
        ``lora``: the LoRA entry (``_lora``) or None."""
        from lib_profile.studio.plan import build_plan
        from lib_profile.studio.settings import GenerateSettings, check, check_sampler

        settings = check(GenerateSettings, settings)  # typed and ranged, else a 400 naming the field
        check_sampler(self.host, settings)

        detail_engine = detail_engine or self.defaults().get("detail_engine") or "builtin"
        if detail_engine == "adetailer" and not self.host.adetailer_present():
            raise HostError("The ADetailer extension is not installed in this WebUI; use the built-in face detail")
        build_plan(prompt or "x", lora["path"] if lora else None, None, tone, count, seed, switches, lora_weight,
                   detail_engine=detail_engine, family=self.host.model_family, **settings)
        if lora:  # the identity's LoRA made for another model family than the checkpoint's: a 400 now
            from lib_profile.families import check_compatible
            from lib_profile.lora.family import lora_file_family

            problem = check_compatible(self.host.model_family, lora_family=lora_file_family(lora["path"]),
                                       lora_name=lora["name"])
            if problem:
                raise HostError(problem)
        if prompt:  # a <lora:NAME:W> tag naming no LoRA, or one for another model family: a 400 now
            self.host.check_prompt_loras(prompt)
        if pose and not pose_photo:
            from lib_profile.studio.pose import load_pose, template_path

            load_pose(template_path(pose))  # a template's name; never a path
        return {"pose": pose, "tone": tone, "count": count, "seed": seed, "prompt": prompt, "switches": switches,
                "lora": lora["name"] if lora else None, "lora_weight": lora_weight, "settings": settings,
                "pose_photo": pose_photo is not None, "detail_engine": detail_engine}

    def _portrait_request(self, slug: str, job: str, image: Optional[str]):
        """(plan, the txt2img request of its first pass) of a studio portrait."""
        from lib_profile.studio.run import first_stage_request, pose_unit

        plan, seed = self._portrait(slug, job, image)
        return plan, first_stage_request(plan, seed, pose_unit(plan))

    def _portrait(self, slug: str, job: str, image: Optional[str]):
        """(plan, seed) of a studio portrait."""
        from lib_profile.studio.plan import Plan

        if not image:
            raise HostError("Name the portrait (image) of that job to explain or edit")
        folder = self.output_file(slug, job, "plan.json").parent
        self.output_file(slug, job, image)
        result = json.loads((folder / "result.json").read_text("utf-8"))
        item = next((i for i in result["images"] if i["file"] == image), None)
        if item is None:
            raise NotFound(f"{image!r} is not a portrait of job {job}")
        return Plan.load(folder / "plan.json"), item["seed"]

    def _generate(self, ctx: JobContext) -> dict[str, Any]:
        from lib_profile.studio.plan import build_plan, default_prompt
        from lib_profile.studio.pose_detection import pose_from_photo_file
        from lib_profile.studio.progress import PlanProgress
        from lib_profile.studio.run import count_passes, run_plan

        p = ctx.params
        slug = ctx.identity
        out = self.store.outputs_folder(slug) / ctx.id
        out.mkdir(parents=True, exist_ok=True)
        entry = self._lora(slug, p["lora"]) if p.get("lora") else None
        pose = p.get("pose")
        if p.get("pose_photo_file"):  # stored whole before the job was queued
            photo = inside(self.store.folder(slug) / "pose-photos", p["pose_photo_file"], what="pose photo")
            pose = str(pose_from_photo_file(photo, out / "pose-from-photo.json"))
        elif p.get("pose_photo"):  # a job queued by an older version: the photo in its folder
            pose = str(pose_from_photo_file(out / "pose-photo.upload", out / "pose-from-photo.json"))
        host = self.host
        settings = dict(p.get("settings") or {})
        models = {}
        for kind in ("pose", "tile"):  # the host's ControlNet model, the one the settings name, or none (null)
            key = f"controlnet_{kind}"
            if key not in settings:
                models[kind] = host.controlnet_model(kind)
            else:
                wanted = settings.pop(key)
                models[kind] = host.controlnet_model(kind, wanted) if wanted else None
        plan = build_plan(p.get("prompt") or default_prompt(entry["path"] if entry else None),
                          entry["path"] if entry else None, pose, p["tone"], p["count"], p["seed"], p.get("switches"),
                          p.get("lora_weight", 0.9), models["pose"], models["tile"],
                          self.data_dir, p.get("detail_engine", "builtin"), family=host.model_family, **settings)
        notes = host.take_notes()
        if notes:  # the host's notes say more than the plan's generic one
            plan.notes = [n for n in plan.notes if not n.startswith("No pose ControlNet model")]
            plan.notes.extend(n for n in dict.fromkeys(notes) if n not in plan.notes)
            notes.clear()
        progress = PlanProgress(plan, lambda done, eta: ctx.update(progress=done, eta_s=eta))

        def on_stage(n: int, index: int, kind: str) -> None:
            ctx.update(stage=f"portrait {n + 1} of {plan.count}: {kind}")
            progress.stage(n, index, kind)

        host_control = host.control()
        control = RunControl(on_step=progress.step, should_interrupt=lambda: ctx.cancelled.is_set() or bool(
            host_control.should_interrupt and host_control.should_interrupt()))
        try:
            with host.job(ctx.task_id, count_passes(plan)):
                result = run_plan(plan, host, out, control=control, on_stage=on_stage)
        except Interrupted as stop:
            kept = getattr(stop, "result", None)
            if kept is not None:
                stop.result = {"folder": str(out), **kept}
                whole = len(kept["images"])
                part = kept.get("unfinished")
                ctx.update(message=f"Stopped: kept {whole} finished portrait(s)" + (
                    f" and the unfinished one after {part['stages'][-1]['stage'].split(':', 1)[1]}" if part and
                    part["stages"] else "") + f" in {out.name}")
            raise
        for note in result["notes"]:
            ctx.update(message=note)
        return {"folder": str(out), **result}
