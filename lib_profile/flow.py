"""The whole flow in one job: photos -> intake -> training -> portraits (``POST /portraits``).

:func:`start` checks everything a request gives before anything is stored (the photos' count and size, the
training options, the pose, tone and plan settings: a 400 at the request, not a failed job), creates the identity,
stages the photos in it atomically and only then queues one ``portraits`` job. :func:`run` is that job: it takes
the staged photos in (the intake), trains the LoRA, then makes the portraits, with one progress from 0 to 1 across
the three phases (:data:`PHASES`), one cancel, and a resume that continues where it stopped (a finished intake or
training is not done again; a stopped training resumes from its last saved step).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from lib_profile.hosts.base import HostError, resolve_checkpoint
from lib_profile.store.files import atomic_write, storage_errors
from lib_profile.store.identities import MAX_PHOTO_BYTES, MAX_PHOTOS, Conflict, safe_file_name, slug_for
from lib_profile.store.safe import check_name, inside

if TYPE_CHECKING:
    from lib_profile.jobs.manager import JobContext
    from lib_profile.service import Studio

#: (phase, share of the job's progress): the training dominates, as it does in time
PHASES = (("intake", 0.05), ("training", 0.70), ("portraits", 0.25))

GENERATE_KEYS = ("pose", "tone", "count", "seed", "prompt", "switches", "lora_weight", "settings", "detail_engine")


class Phase:
    """A job context seen by one phase's handler: its progress is mapped into the phase's share of the whole job,
    its stage is prefixed with the phase; everything else (id, cancel, the WebUI's task id) is the job's own."""

    def __init__(self, ctx: "JobContext", name: str, params: dict[str, Any]):
        self._ctx = ctx
        self.name = name
        self.params = params
        start = 0.0
        for phase, share in PHASES:
            if phase == name:
                break
            start += share
        self.start, self.share = start, dict(PHASES)[name]
        self.id, self.kind, self.identity = ctx.id, ctx.kind, ctx.identity
        self.cancelled = ctx.cancelled
        self.task_id = ctx.task_id

    def __getattr__(self, name: str):
        """Every other public attribute is the job context's own, read live (cluster mode's ``taken_over``,
        ``attempt``, ``fenced``, and whatever a JobContext gains later)."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._ctx, name)

    def update(self, stage: Optional[str] = None, progress: Optional[float] = None, eta_s: Optional[float] = None,
               message: Optional[str] = None, flush: bool = False) -> None:
        self._ctx.update(stage=None if stage is None else f"{self.name}: {stage}",
                         progress=None if progress is None else self.start + self.share * max(0.0, min(1.0, progress)),
                         eta_s=eta_s, message=message, flush=flush)


def start(studio: "Studio", name: str, files: list[tuple[str, bytes]], class_word: str = "person",
          train: Optional[dict[str, Any]] = None, checkpoint: Optional[str] = None,
          pose_photo: Optional[bytes] = None, **generate: Any) -> dict[str, Any]:
    """Check the request, create the identity ``name``, stage ``files`` (name, bytes) in it and queue the job.

    ``train``: training options (as ``Studio.train``); ``generate``: :data:`GENERATE_KEYS` (as ``Studio.generate``).
    Raises HostError (400) for a bad value, Conflict (409) when an identity of that name exists (use the step
    routes for it, or delete it first). Nothing is left behind when it raises."""
    unknown = set(generate) - set(GENERATE_KEYS)
    if unknown:
        raise HostError(f"Unknown setting(s): {', '.join(sorted(unknown))}")
    if not files:
        raise HostError("No photos given; send about 10 photos of the person (JPEG, PNG, WebP, HEIC)")
    if len(files) > MAX_PHOTOS:
        raise HostError(f"At most {MAX_PHOTOS} photos; send about 10")
    for fname, data in files:
        if len(data) > MAX_PHOTO_BYTES:
            raise HostError(f"{safe_file_name(fname)} is over {MAX_PHOTO_BYTES // 2**20} MB; send a smaller copy")
    options = studio.train_options(train)
    if checkpoint:
        checkpoint = resolve_checkpoint(studio.host, checkpoint)
    checked = studio.check_generate(pose_photo=pose_photo, **{k: v for k, v in generate.items() if v is not None})
    slug = slug_for(name)
    try:
        studio.store.get(slug)
    except HostError:
        pass
    else:
        raise Conflict(f"An identity named {name!r} ({slug}) already exists: add photos, train and generate with "
                       f"its own routes (/identities/{slug}/...), or delete it first")
    record = studio.create_identity(name, class_word)
    try:
        staged = _stage(studio, record["slug"], files)
        if pose_photo is not None:  # checked (a 400 if it is no image) and stored whole before the job is queued
            checked["pose_photo_file"] = studio._save_pose_photo(record["slug"], pose_photo)
        params = {"staged": staged.name, "train": {"options": options, "checkpoint": checkpoint,
                                                   "run": time.strftime("%Y%m%d-%H%M%S"), "name": record["slug"]},
                  "generate": checked}
        return studio.jobs.submit("portraits", record["slug"], params)
    except BaseException:
        studio.store.delete(record["slug"])  # the identity this request made, and its staged photos
        raise


def _stage(studio: "Studio", slug: str, files: list[tuple[str, bytes]]) -> Path:
    """Write the request's photos into a fresh folder of the identity, each whole (:func:`atomic_write`), before
    any job can see them; their names as the user gave them are kept in ``names.json`` (stored name -> given
    name), so the intake reports them by those names."""
    folder = inside(studio.store.folder(slug), f"staged-{uuid.uuid4().hex[:12]}", what="staging folder")
    photos = folder / "photos"
    with storage_errors(folder):
        photos.mkdir(parents=True)
        names = {}
        for i, (given, data) in enumerate(files):
            stored = f"{i:03d}-{safe_file_name(given)}"
            atomic_write(inside(photos, stored, what="photo name"), data)
            names[stored] = given
        atomic_write(folder / "names.json", json.dumps(names))
    return folder


def run(studio: "Studio", ctx: "JobContext") -> dict[str, Any]:
    """The ``portraits`` job: intake, training, portraits; returns the three phases' results."""
    p = ctx.params
    slug = ctx.identity
    staged = studio.store.folder(slug) / check_name(p["staged"], "staging folder")
    # 1. intake: the staged photos join the identity's (done once: a resumed job finds them taken in)
    intake = Phase(ctx, "intake", p)
    if (staged / "photos").is_dir():
        intake.update(stage="checking the photos", progress=0.0, flush=True)
        names = json.loads((staged / "names.json").read_text("utf-8"))
        files = [(given, (staged / "photos" / stored).read_bytes()) for stored, given in sorted(names.items())]
        studio.store.add_photos(slug, files, **studio.intake_options())
        shutil.rmtree(staged / "photos")
    report = studio.store.get(slug)["intake"] or {}
    counts = report.get("counts", {})
    intake.update(progress=1.0, message=f"Intake: {counts.get('accepted', 0)} of {counts.get('total', 0)} "
                                         "photos accepted")
    if not report.get("ready"):
        raise HostError("Too few good photos to train: " + (report.get("next_step") or "add more photos") +
                        f" (see GET /identities/{slug} for each photo's reasons)")
    # 2. training (skipped when this run's LoRA is there; resumed from its last saved step when it was stopped)
    t = p["train"]
    lora = next((x for x in studio.store.get(slug)["loras"] if x.get("run") == t["run"]), None)
    if lora is None:
        state = studio.store.folder(slug) / "training" / t["run"] / "state" / "state.pt"
        trained = studio._train(Phase(ctx, "training", {**t, "resume": state.is_file()}))
        lora = {"name": trained["lora"], "file": trained["file"],
                "identity_similarity": trained["identity_similarity"]}
    else:
        Phase(ctx, "training", t).update(progress=1.0, message=f"Training: {lora['name']} is already made")
    # 3. portraits with that LoRA
    g = {**p["generate"], "lora": lora["name"]}
    made = studio._generate(Phase(ctx, "portraits", g))
    shutil.rmtree(staged, ignore_errors=True)
    return {**made, "lora": {k: lora.get(k) for k in ("name", "file", "identity_similarity")},
            "intake": {"counts": counts, "contact_sheet": f"identities/{slug}/contact_sheet.png"}}
