"""Training jobs: starting, resuming, and running the trainer process (``python -m lib_profile train``) for a
job (a mixin of :class:`~lib_profile.service.studio.Studio`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

from lib_profile import families
from lib_profile.hosts.base import HostError, Interrupted, resolve_checkpoint
from lib_profile.jobs.manager import JobContext
from lib_profile.store.identities import Conflict, NotFound
from lib_profile.store.files import no_space, out_of_space
from lib_profile.store.safe import check_name
from lib_profile.train import launch, runlock
from lib_profile.train.runlock import LOCKED

TRAIN_CANCELLED = 3  # the train command's exit code for a resumable stop
EARLIER_TRAINER = ("A trainer from before the restart is still running on this run; wait for it to stop (it was "
                   "asked to, and saves its last step), or cancel it, then resume.")

# Training settings a request may set, with the checks the trainer applies; None = the trainer's default.
TRAIN_OPTIONS = ("steps", "rank", "alpha", "learning_rate", "batch_size", "resolution", "seed", "validate_every",
                 "validation_images", "validation_steps", "validation_size", "select", "save_every", "log_every",
                 "device", "identity_in_lora", "low_memory")


TRAINS_ON = (families.SD15.name, families.SDXL.name)  # the face trainer's model families (lib_profile/train/)


class Training:
    """Train and resume jobs, and the job handler that runs the trainer process."""

    def train(self, slug: str, options: Optional[dict[str, Any]] = None, checkpoint: Optional[str] = None) -> dict:
        if self.host.model_family not in TRAINS_ON:  # said now (400), not by the trainer process (a failed job)
            raise HostError(families.unsupported_checkpoint_message(self.host.model_family, "Training a face LoRA"))
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

    @staticmethod
    def _resumes(ctx: JobContext, out: Path) -> bool:
        """Whether this run continues from the run folder's saved state: a resume job, or (cluster mode) a job
        taken up after its first worker stopped, once that worker had saved a state (before: from step 0)."""
        if ctx.params.get("resume"):
            return True
        if ctx.taken_over and (out / "state" / "state.pt").is_file():
            ctx.update(message="Its first worker stopped; continuing from the last saved step")
            return True
        return False

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
            elif key == "low_memory":  # a switch: off by default
                cmd += ["--low-memory"] if value else []
            else:
                cmd += [f"--{key.replace('_', '-')}", str(value)]
        resume = self._resumes(ctx, out)
        if resume:
            cmd.append("--resume")
        steps = int(opts["steps"])
        ctx.update(stage="starting", progress=0.0, message=f"Training {p['name']} for {steps} steps")
        log = out / "train.log"
        reader = TrainingProgress(events, steps, ctx.update, self.host.training_progress)
        if resume and events.is_file():  # the run before this one wrote there too: read only what is new
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
