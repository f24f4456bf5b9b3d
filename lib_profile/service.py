"""The studio as a service: identities, photos, training and generation jobs, on one host.

The API routes and the tab both call this; it runs the same in the WebUI (WebUI host, LoRAs in the
WebUI's Lora folder, portraits in its outputs folder) and standalone (diffusers host, all under the
data folder). Data flows one way: photos -> intake -> LoRA -> plan -> portraits -> result.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from lib_profile import flow, paths
from lib_profile.hosts.base import Host, HostError, Interrupted, RunControl, resolve_checkpoint
from lib_profile.jobs.db import JobDB
from lib_profile.jobs.manager import JobContext, JobManager
from lib_profile.store.identities import Conflict, IdentityStore, NotFound
from lib_profile.store.files import atomic_write, no_space, out_of_space, storage_errors
from lib_profile.store.safe import JOB_ID, check_name, inside, is_inside
from lib_profile.train import launch, runlock
from lib_profile.train.runlock import LOCKED

EXTENSION_ROOT = Path(__file__).resolve().parent.parent
TRAIN_CANCELLED = 3  # the train command's exit code for a resumable stop
EARLIER_TRAINER = ("A trainer from before the restart is still running on this run; wait for it to stop (it was "
                   "asked to, and saves its last step), or cancel it, then resume.")

# Training settings a request may set, with the checks the trainer applies; None = the trainer's default.
TRAIN_OPTIONS = ("steps", "rank", "alpha", "learning_rate", "batch_size", "resolution", "seed", "validate_every",
                 "validation_images", "validation_steps", "validation_size", "select", "save_every", "log_every",
                 "device", "identity_in_lora")


class Studio:
    def __init__(self, host: Host, data_dir: str | Path | None = None, lora_root: str | Path | None = None,
                 outputs_root: str | Path | None = None, defaults: Optional[Callable[[], dict[str, Any]]] = None):
        """``defaults()``: the user's settings (WebUI Settings -> Profile Studio): ``train_steps``,
        ``min_photos``, ``detail_engine``; read at each use, so changes apply at once."""
        self.host = host
        self.defaults = defaults or dict
        self.data_dir = paths.data_dir(data_dir)
        self.store = IdentityStore(self.data_dir / "identities", lora_root or self.data_dir / "loras",
                                   outputs_root or self.data_dir / "outputs")
        self.jobs = JobManager(JobDB(self.data_dir / "jobs.sqlite3"),
                               {"train": self._storage_guard(self._train, self.store.folder),
                                "generate": self._storage_guard(self._generate, self.store.outputs_folder),
                                "explain": self._storage_guard(self._explain, self.store.outputs_folder),
                                "edit": self._storage_guard(self._edit, self.store.outputs_folder),
                                "portraits": self._storage_guard(lambda ctx: flow.run(self, ctx), self.store.folder)})
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

    # ------------------------------------------------------------------ identities
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

    # ------------------------------------------------------------------ jobs
    def train(self, slug: str, options: Optional[dict[str, Any]] = None, checkpoint: Optional[str] = None) -> dict:
        record = self.store.get(slug)
        if self.jobs.busy_with(slug):  # said first: the tab then shows that job
            raise Conflict("This identity already has a job queued or running")
        options = self.train_options(options)
        if checkpoint:  # a name the host lists, never a path of the request's own
            checkpoint = resolve_checkpoint(self.host, checkpoint)
        self.store.intake_dir(slug)  # ready to train, or a clear message
        run = time.strftime("%Y%m%d-%H%M%S")
        params = {"options": options, "checkpoint": checkpoint, "run": run, "name": record["slug"],
                  "resume": False}
        return self.jobs.submit("train", slug, params)

    @staticmethod
    def train_options(options: Optional[dict[str, Any]]) -> dict[str, Any]:
        """The training options a request set (None values dropped); HostError for an unknown one."""
        options = {k: v for k, v in (options or {}).items() if v is not None}
        unknown = set(options) - set(TRAIN_OPTIONS)
        if unknown:
            raise HostError(f"Unknown training setting(s): {', '.join(sorted(unknown))}")
        return options

    def portraits(self, name: str, files: list[tuple[str, bytes]], **kwargs: Any) -> dict[str, Any]:
        """The whole flow in one job: a new identity ``name`` from ``files``, its LoRA, its portraits
        (:mod:`lib_profile.flow`)."""
        return flow.start(self, name, files, **kwargs)

    def _run_folder(self, job: dict[str, Any]) -> Path:
        """The training run folder of a train job, or of a portraits job's training."""
        params = job["params"] or {}
        run = params.get("run") or (params.get("train") or {}).get("run")
        return self.store.folder(job["identity"]) / "training" / check_name(run, "run")

    def _end_orphans(self, interrupted: list[dict[str, Any]]) -> None:
        """After a restart: a training job the last run left running is interrupted (resumable). Its trainer
        normally died with that run; one still alive (its run folder's lock tells) is asked to stop at its
        next step, and until it has, resuming is refused (the lock would refuse a second trainer anyway)."""
        for job in interrupted:
            params = job.get("params") or {}
            if job["kind"] not in ("train", "portraits") or not (params.get("run") or params.get("train")):
                continue
            try:
                folder = self._run_folder(job)
            except (HostError, NotFound):
                continue
            if runlock.holder(folder) is not None:
                (folder / "CANCEL").touch()
                self.jobs.db.update(job["id"], messages=[*job["messages"], EARLIER_TRAINER])

    def resume(self, job_id: str) -> dict[str, Any]:
        """Continue a cancelled, interrupted or failed training from its last saved step, as a new job.
        Raises Conflict (409) when there is nothing to resume or a trainer still writes to the run."""
        job = self.jobs.get(job_id)
        if job["kind"] == "portraits" and job["state"] in ("cancelled", "interrupted", "failed"):
            if self.jobs.busy_with(job["identity"]):
                raise Conflict("This identity already has a job queued or running")
            if runlock.holder(self._run_folder(job)) is not None:
                raise Conflict(EARLIER_TRAINER)
            return self.jobs.submit("portraits", job["identity"], {**job["params"], "resumes": job_id})
        if job["kind"] != "train" or job["state"] not in ("cancelled", "interrupted", "failed"):
            raise Conflict("Only a cancelled, interrupted or failed training or portraits job can be resumed")
        if runlock.holder(self._run_folder(job)) is not None:
            raise Conflict(EARLIER_TRAINER)
        state = self._run_folder(job) / "state" / "state.pt"
        if not state.is_file():
            raise Conflict("This training stopped before its first checkpoint; start a new training instead")
        return self.jobs.submit("train", job["identity"], {**job["params"], "resume": True, "resumes": job_id})

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
                   detail_engine=detail_engine, **settings)
        if prompt:  # a <lora:NAME:W> tag naming no LoRA, or one for another model family: a 400 now
            self.host.check_prompt_loras(prompt)
        if pose and not pose_photo:
            from lib_profile.studio.pose import load_pose, template_path

            load_pose(template_path(pose))  # a template's name; never a path
        return {"pose": pose, "tone": tone, "count": count, "seed": seed, "prompt": prompt, "switches": switches,
                "lora": lora["name"] if lora else None, "lora_weight": lora_weight, "settings": settings,
                "pose_photo": pose_photo is not None, "detail_engine": detail_engine}

    def explain(self, slug: str, words: list[str], job: Optional[str] = None, image: Optional[str] = None,
                prompt: Optional[str] = None, seed: int = -1, settings: Optional[dict[str, Any]] = None,
                layers: Optional[tuple[int, int]] = None, steps: Optional[tuple[int, int]] = None,
                stage: Optional[int] = None, hires: bool = False) -> dict:
        """Word heat maps of a portrait's first pass (``job`` + ``image``), of a later pass of it (``stage``:
        its index in the plan, a detail or refine stage), or of a new image of ``prompt`` (``hires``: of its
        hires fix pass, with ``settings`` such as ``{"hires_scale": 2}``)."""
        from lib_profile.attention.daam import TokenMap, check_range
        from lib_profile.attention.explain import check_hires_pass, tokenizer
        from lib_profile.studio.run import stage_prompt

        layers, steps = check_range("layers", layers), check_range("steps", steps)
        req = self._source_request(slug, job, image, prompt, seed, settings)
        check_hires_pass(req, hires)
        text = req.prompt if stage is None else stage_prompt(*self._stage(slug, job, image, stage,
                                                                          ("txt2img", "detail", "refine")))
        tokens = TokenMap.for_host(self.host, tokenizer(), text)
        words = [w for w in (words or []) if w and w.strip()]
        if not words:
            raise HostError(f"Choose words to explain; the prompt's words are: {', '.join(tokens.words())}")
        for word in words:
            tokens.positions(tokenizer(), word)
        params = {"source": self._source_params(job, image, prompt, seed, settings), "words": words,
                  "layers": list(layers) if layers else None, "steps": list(steps) if steps else None,
                  "stage": stage, "hires": bool(hires)}
        return self.jobs.submit("explain", slug, params)

    def _stage(self, slug: str, job: Optional[str], image: Optional[str], stage: int, kinds: tuple[str, ...]):
        """(plan, stage) of pass ``stage`` of a studio portrait, once it is known to be an enabled stage of a kind
        in ``kinds``."""
        if not job:
            raise HostError("A stage is a pass of a studio portrait: name its job and image too")
        plan = self._portrait(slug, job, image)[0]
        if not 0 <= stage < len(plan.stages) or not plan.stages[stage].enabled or plan.stages[stage].kind not in kinds:
            named = ", ".join(kinds[:-1]) + f" or {kinds[-1]}" if len(kinds) > 1 else kinds[0]
            raise HostError(f"stage must be the index of an enabled {named} stage of this portrait: "
                            + ", ".join(f"{i} ({s.kind})" for i, s in plan.enabled()))
        return plan, plan.stages[stage]

    def stage_index(self, slug: str, job: str, image: str, kind: str) -> Optional[int]:
        """The index of the first enabled ``kind`` stage (``detail``, ``refine``) of a portrait's plan; None when
        that portrait's plan has no such pass."""
        plan = self._portrait(slug, job, image)[0]
        return next((i for i, s in plan.enabled() if s.kind == kind), None)

    def edit(self, slug: str, target: Optional[str] = None, mode: str = "swap", job: Optional[str] = None,
             image: Optional[str] = None, prompt: Optional[str] = None, seed: int = -1,
             settings: Optional[dict[str, Any]] = None, cross_steps: float = 0.8, self_steps: float = 0.4,
             weights: Optional[dict[str, float]] = None, blend_words: Optional[list[str]] = None,
             blend_threshold: float = 0.3, replace: Optional[dict[str, str]] = None, finish: bool = True,
             stage: Optional[int] = None) -> dict:
        """Edit a portrait's first pass (or its refine pass: ``stage``, that stage's index in the plan) by editing
        its prompt (Prompt-to-Prompt): source and edit in one batch; with ``finish``, a studio portrait's later
        passes (face detail, refine, upscale, colour) follow on the edit."""
        from lib_profile.attention.p2p import Edit, PromptToPrompt
        from lib_profile.attention.explain import tokenizer
        from lib_profile.prompts.parse import chunk_count
        from lib_profile.studio.run import stage_prompt

        req = self._source_request(slug, job, image, prompt, seed, settings)
        source = req.prompt
        if stage is not None:
            plan, pass_ = self._stage(slug, job, image, stage, ("txt2img", "refine"))
            source, stage = stage_prompt(plan, pass_), None if pass_.kind == "txt2img" else stage
        tok = tokenizer()
        if replace:  # whole words swapped in the source prompt (``word#n``: its n-th place): the easy way to a target
            from lib_profile.attention.daam import TokenMap
            from lib_profile.attention.words import replace_words

            target = replace_words(source, replace, TokenMap.from_prompt(tok, source).words())
        edit = Edit(source=source, target=target or "", mode=mode, cross_steps=cross_steps,
                    self_steps=self_steps, weights=dict(weights or {}), blend_words=list(blend_words or []),
                    blend_threshold=blend_threshold)
        # refused now, not in the job: a swap with another word count, unknown weight or blend words
        PromptToPrompt(tok, edit, max(chunk_count(tok, p) for p in (edit.source, edit.edited_prompt)))
        params = {"source": self._source_params(job, image, prompt, seed, settings),
                  "edit": {k: getattr(edit, k) for k in ("target", "mode", "cross_steps", "self_steps", "weights",
                                                         "blend_words", "blend_threshold")},
                  "finish": bool(finish), "stage": stage}
        return self.jobs.submit("edit", slug, params)

    @staticmethod
    def _source_params(job, image, prompt, seed, settings) -> dict[str, Any]:
        from lib_profile.studio.settings import SourceSettings, check

        return {"job": job, "image": image, "prompt": prompt, "seed": seed, "settings": check(SourceSettings, settings)}

    def _source_request(self, slug: str, job: Optional[str], image: Optional[str], prompt: Optional[str],
                        seed: int = -1, settings: Optional[dict[str, Any]] = None):
        """The txt2img request that made a studio portrait (its plan and seed), or one for a new prompt
        with the identity's newest LoRA (``settings``: plan settings, and hires fix as ``hires_scale``,
        ``hires_steps``, ``hires_denoising``, ``hires_upscaler``)."""
        from lib_profile.studio.plan import build_plan, default_prompt
        from lib_profile.studio.run import first_stage_request
        from lib_profile.studio.settings import SourceSettings, check, check_sampler

        settings = check(SourceSettings, settings)  # typed and ranged, else a 400 naming the field
        check_sampler(self.host, settings)
        self.store.get(slug)
        hires = {k: settings.pop(k) for k in list(settings) if k.startswith("hires_")}
        if job:
            if hires:
                raise HostError("Hires fix settings are for a new prompt; a studio portrait's later passes are the "
                                "stages of its plan (stage: the index of its detail or refine stage)")
            return self._portrait_request(slug, job, image)[1]
        entry = self._lora(slug, None)
        lora = entry["path"] if entry else None
        plan = build_plan(prompt or default_prompt(lora), lora, None, "neutral", 1, seed, None, 0.9,
                          data_dir=self.data_dir, **settings)
        req = first_stage_request(plan, plan.seed)
        for key, value in hires.items():
            setattr(req, key, value)
        req.validate()
        self.host.check_hires(req)
        return req

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
            entry = {**entry, "path": str(inside(self.store.lora_folder(slug), entry["file"], what="LoRA file"))}
        return entry

    # ------------------------------------------------------------------ job handlers
    def _train(self, ctx: JobContext) -> dict[str, Any]:
        from lib_profile.train.progress import TrainingProgress

        p = ctx.params
        slug = ctx.identity
        intake = self.store.intake_dir(slug)
        out = self.store.folder(slug) / "training" / p["run"]
        out.mkdir(parents=True, exist_ok=True)
        events, cancel = out / "events.jsonl", out / "CANCEL"
        checkpoint = p.get("checkpoint") or self.host.checkpoint_path()
        opts = {"steps": int(self.defaults().get("train_steps") or 800),
                "identity_in_lora": self.defaults().get("identity_in_lora", True) is not False, **p["options"]}
        cmd = ["train", str(intake), "--checkpoint", str(checkpoint), "--name", p["name"], "--out", str(out),
               "--events", str(events), "--cancel-file", str(cancel)]
        for key, value in opts.items():
            if key == "identity_in_lora":  # a switch: on by default
                cmd += [] if value else ["--no-identity-in-lora"]
            else:
                cmd += [f"--{key.replace('_', '-')}", str(value)]
        if p.get("resume"):
            cmd.append("--resume")
        steps = int(opts["steps"])
        ctx.update(stage="starting", progress=0.0, message=f"Training {p['name']} for {steps} steps")
        log = out / "train.log"
        reader = TrainingProgress(events, steps, ctx.update, self.host.training_progress)
        if p.get("resume") and events.is_file():  # the run before this one wrote there too: read only what is new
            reader.offset = events.stat().st_size
        with self.host.training_slot(ctx.task_id, steps), open(log, "ab") as log_file:
            proc = launch.spawn(cmd, log_file, self.data_dir)  # dies with this process; holds the run's lock
            host_control = self.host.control()
            while True:
                stopped = proc.poll() is not None
                reader.poll()
                if stopped:
                    break
                if (ctx.cancelled.is_set() or (host_control.should_interrupt and host_control.should_interrupt())) \
                        and not cancel.exists():
                    cancel.touch()
                time.sleep(0.2)
        error = reader.error
        if proc.returncode == TRAIN_CANCELLED:
            ctx.update(message="Training stopped; resume it to continue from the last step")
            raise Interrupted()
        if proc.returncode == LOCKED:
            raise HostError("Another trainer is still writing to this run (one from before a restart, or a second "
                            "WebUI or serve on the same data folder); wait for it or cancel it, then resume.")
        if proc.returncode != 0:
            tail = log.read_text("utf-8", "replace").strip().splitlines()[-3:]
            if not error and not any("error:" in line for line in tail) and out_of_space(out):
                raise no_space(out)  # the full disk took the log too
            raise HostError(error or f"Training failed (exit {proc.returncode}): {' | '.join(tail)}")
        report = json.loads((out / "train_report.json").read_text("utf-8"))
        entry = self._publish(slug, out, report)
        return {"lora": entry["name"], "file": entry["file"], "identity_similarity": entry["identity_similarity"],
                "report": report["choice"], "steps": steps}

    def _publish(self, slug: str, out: Path, report: dict[str, Any]) -> dict[str, Any]:
        """Copy the LoRA (and what travels with it) into the LoRA root, where the WebUI lists it."""
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
        meta = read_metadata(dest_dir / src.name)
        activation = meta.get("profile_studio_activation_text", f"{record['token']} {record['class_word']}")
        atomic_write(dest_dir / f"{stem}.json", json.dumps({
            "description": f"Profile Studio face LoRA of {record['name']}", "sd version": "SD1",
            "activation text": activation, "preferred weight": 0.9, "notes": "",
        }, indent=1, ensure_ascii=False))
        entry = {"name": stem, "file": src.name, "created": time.time(), "activation_text": activation,
                 "identity_similarity": report["choice"].get("identity_similarity"), "run": out.name}
        self.store.add_lora(slug, entry)
        self.host.lora_list_changed()  # listed in the WebUI (Extra Networks, /sdapi/v1/loras) at once
        return entry

    def _source_of(self, ctx: JobContext):
        src = ctx.params["source"]
        return self._source_request(ctx.identity, src["job"], src["image"], src["prompt"], src["seed"],
                                    src["settings"])

    def _attention_run(self, ctx: JobContext):
        """The job's output folder (made only when its results are written, so a failed job leaves none)
        and its run control (the job's cancel and the host's interrupt)."""
        out = self.store.outputs_folder(ctx.identity) / ctx.id
        host_control = self.host.control()

        def on_step(step: int, steps: int) -> None:
            ctx.update(stage="sampling", progress=step / max(steps, 1))

        control = RunControl(on_step=on_step, should_interrupt=lambda: ctx.cancelled.is_set() or bool(
            host_control.should_interrupt and host_control.should_interrupt()))
        return out, control

    def _explain(self, ctx: JobContext) -> dict[str, Any]:
        from lib_profile.attention.explain import explain, explain_stage, save

        out, control = self._attention_run(ctx)
        p = ctx.params
        layers = tuple(p["layers"]) if p["layers"] else None
        steps = tuple(p["steps"]) if p["steps"] else None
        if p.get("stage") is not None:
            src = p["source"]
            plan, seed = self._portrait(ctx.identity, src["job"], src["image"])
            with self.host.job(ctx.task_id, p["stage"] + 1):
                explanation = explain_stage(self.host, plan, seed, p["stage"], p["words"], layers, steps, control)
        else:
            req = self._source_of(ctx)
            with self.host.job(ctx.task_id, 1):
                explanation = explain(self.host, req, p["words"], layers, steps, control,
                                      hires_pass=bool(p.get("hires")))
        report = save(explanation, out)
        for note in report["notes"]:
            ctx.update(message=note)
        return {"folder": str(out), **report}

    def _edit(self, ctx: JobContext) -> dict[str, Any]:
        """The edit of a first pass, or of a studio portrait's refine pass (``stage``); for a studio portrait
        (unless ``finish`` is off) the edit is then finished by the portrait's later passes, and the before/after
        pair is the portrait and the edited portrait (the edited pass's pair is kept beside)."""
        import dataclasses

        from lib_profile.attention.explain import run_notes
        from lib_profile.attention.p2p import Edit, edit_control, edit_request
        from lib_profile.infotext import infotext, save_png
        from lib_profile.studio.run import count_passes, finish, replay, stage_prompt

        out, control = self._attention_run(ctx)
        src, stage, finishing = ctx.params["source"], ctx.params.get("stage"), ctx.params.get("finish", True)
        plan = None
        if stage is not None:  # a later pass (refine) of a studio portrait
            plan, seed = self._portrait(ctx.identity, src["job"], src["image"])
            plan = dataclasses.replace(plan, count=1)  # one portrait: its progress bar spans its own passes
            kind = plan.stages[stage].kind
            edit = Edit(source=stage_prompt(plan, plan.stages[stage]), **ctx.params["edit"])
        else:
            kind = "first"
            if src.get("job") and finishing:
                plan, req = self._portrait_request(ctx.identity, src["job"], src["image"])
            else:
                req = self._source_of(ctx)
            edit = Edit(source=req.prompt, **ctx.params["edit"])
            if plan is not None:
                plan = dataclasses.replace(plan, prompt=edit.edited_prompt, count=1)
        finishing = finishing and plan is not None
        passes = count_passes(plan, through=None if finishing else stage) if plan else 1
        with self.host.job(ctx.task_id, passes):
            if stage is not None:  # the passes before it as they were, then the pair
                editing = edit_control(self.host, edit, plan.negative_prompt, control)
                _image, info = replay(plan, self.host, seed, stage, editing, control,
                                      adjust=lambda req: edit_request(req, edit))
                pair, params = info["images"][:2], info["params"]
            else:
                editing = edit_control(self.host, edit, req.negative_prompt, control)
                res = self.host.txt2img(edit_request(req, edit), editing)
                pair, params, seed = res.images[:2], res.params, res.seeds[0]
            edited = pair[1]
            if finishing:
                ctx.update(stage="finishing", message="the portrait's later passes on the edit")
                edited = finish(plan, self.host, edited, seed, control, after=stage)
        p2p = editing.attention
        text = infotext({**params, "prompt": edit.edited_prompt},
                        {"Prompt-to-Prompt": f"{edit.mode}, {p2p.summary()} (tau {edit.cross_steps:g}, "
                                             f"self {edit.self_steps:g})"})
        out.mkdir(parents=True, exist_ok=True)
        result = {"source": "source.png", "edited": "edited.png", "seed": seed, "prompt": edit.edited_prompt,
                  "source_prompt": edit.source, "mode": edit.mode, "pass": kind, "finished": finishing,
                  "injected": p2p.injected(), "notes": run_notes(params)}
        for note in result["notes"]:
            ctx.update(message=note)
        if not finishing:
            pair[0].save(out / "source.png")
        else:  # before: the portrait itself; the edited pass's pair is kept beside
            shutil.copyfile(self.output_file(ctx.identity, src["job"], src["image"]), out / "source.png")
            names = {"source": f"source-{kind}-pass.png", "edited": f"edited-{kind}-pass.png"}
            pair[0].save(out / names["source"])
            save_png(pair[1], out / names["edited"], text)
            result[f"{kind}_pass"] = names
            result["identity_similarity"] = self._likeness(plan, edited)
        save_png(edited, out / "edited.png", text)
        (out / "edit.json").write_text(json.dumps(result, indent=1), "utf-8")
        return {"folder": str(out), **result}

    @staticmethod
    def _likeness(plan, image) -> Optional[float]:
        """The identity similarity of ``image`` to the person of ``plan``'s LoRA (None: no face, no reference)."""
        from lib_profile.identity.score import IdentityScorer, reference_from_lora

        if not plan.lora:
            return None
        return IdentityScorer(reference_from_lora(plan.lora["path"]))(image)

    def _generate(self, ctx: JobContext) -> dict[str, Any]:
        from lib_profile.studio.plan import build_plan, default_prompt
        from lib_profile.studio.pose import pose_from_photo_file
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
                          self.data_dir, p.get("detail_engine", "builtin"), **settings)
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
