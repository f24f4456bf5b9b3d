"""Explain (word heat maps) and edit (Prompt-to-Prompt) jobs on a studio portrait or a new prompt, and their
job handlers (a mixin of :class:`~lib_profile.service.studio.Studio`)."""

from __future__ import annotations

import json
import shutil
from typing import Any, Optional

from lib_profile.hosts.base import HostError, RunControl
from lib_profile.jobs.manager import JobContext


def _photo_only(stage: Optional[int], hires: bool, settings) -> None:
    """A photo source takes none of the options of a portrait's or a new prompt's (HostError naming them)."""
    given = [name for name, value in (("stage", stage is not None), ("hires", hires), ("settings", settings)) if value]
    if given:
        raise HostError(f"{', '.join(given)}: for a studio portrait or a new prompt, not a photo; a photo is "
                        "inverted with the inversion settings (method, steps, cfg_scale, size, ...)")


def _no_photo_options(caption: Optional[str], inversion) -> None:
    if caption or inversion:
        raise HostError("caption and inversion are for a photo source (photo, or photo_image uploaded); a studio "
                        "portrait or a new prompt has its own prompt and settings")


class AttentionJobs:
    """Explain and edit jobs."""

    def explain(self, slug: str, words: list[str], job: Optional[str] = None, image: Optional[str] = None,
                prompt: Optional[str] = None, seed: int = -1, settings: Optional[dict[str, Any]] = None,
                layers: Optional[tuple[int, int]] = None, steps: Optional[tuple[int, int]] = None,
                stage: Optional[int] = None, hires: bool = False, photo: Optional[str] = None,
                upload: Optional[bytes] = None, caption: Optional[str] = None,
                inversion: Optional[dict[str, Any]] = None) -> dict:
        """Word heat maps of a portrait's first pass (``job`` + ``image``), of a later pass of it (``stage``:
        its index in the plan, a detail or refine stage), of a new image of ``prompt`` (``hires``: of its
        hires fix pass, with ``settings`` such as ``{"hires_scale": 2}``), or of a real photo: ``photo`` (one of
        the identity's photos, by name) or ``upload`` (its bytes), read under ``caption`` and inverted with
        ``inversion`` settings (:mod:`.photo_jobs`). One source only (HostError naming them)."""
        from lib_profile.attention.daam import TokenMap, check_range
        from lib_profile.attention.explain import check_hires_pass, tokenizer
        from lib_profile.studio.run import stage_prompt

        self.host.check_attention_control("Explain (DAAM word maps)")  # up front: e.g. not on SDXL yet
        layers, steps = check_range("layers", layers), check_range("steps", steps)
        pending, req, text = self._pick_source(slug, job, image, prompt, seed, settings, stage, hires, photo, upload,
                                               caption, inversion)
        if req is not None:
            check_hires_pass(req, hires)
            if stage is not None:
                text = stage_prompt(*self._stage(slug, job, image, stage, ("txt2img", "detail", "refine")))
        tokens = TokenMap.for_host(self.host, tokenizer(), text)
        words = [w for w in (words or []) if w and w.strip()]
        if not words:
            raise HostError(f"Choose words to explain; the prompt's words are: {', '.join(tokens.words())}")
        for word in words:
            tokens.positions(tokenizer(), word)
        params = {"words": words, "layers": list(layers) if layers else None,
                  "steps": list(steps) if steps else None, "stage": stage, "hires": bool(hires)}
        if pending is not None:
            source = pending.pop("photo_source")
            return self._submit_photo_job("explain", slug, {**pending, **params}, source)
        params["source"] = self._source_params(job, image, prompt, seed, settings)
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
             stage: Optional[int] = None, photo: Optional[str] = None, upload: Optional[bytes] = None,
             caption: Optional[str] = None, inversion: Optional[dict[str, Any]] = None) -> dict:
        """Edit a portrait's first pass (or its refine pass: ``stage``, that stage's index in the plan) by editing
        its prompt (Prompt-to-Prompt): source and edit in one batch; with ``finish``, a studio portrait's later
        passes (face detail, refine, upscale, colour) follow on the edit. Or edit a real photo: ``photo`` (one of
        the identity's photos, by name) or ``upload`` (its bytes), its ``caption`` the source prompt, inverted with
        ``inversion`` settings (:mod:`.photo_jobs`). One source only (HostError naming them)."""
        from lib_profile.attention.p2p import Edit, PromptToPrompt
        from lib_profile.attention.explain import tokenizer
        from lib_profile.prompts.parse import chunk_count
        from lib_profile.studio.run import stage_prompt

        self.host.check_attention_control("Prompt-to-Prompt")  # up front: e.g. not on SDXL yet
        pending, _req, source = self._pick_source(slug, job, image, prompt, seed, settings, stage, False, photo,
                                                  upload, caption, inversion)
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
        params = {"edit": {k: getattr(edit, k) for k in ("target", "mode", "cross_steps", "self_steps", "weights",
                                                         "blend_words", "blend_threshold")},
                  "finish": bool(finish), "stage": stage}
        if pending is not None:
            self.check_photo_inversion(edit.edited_prompt)
            photo_source = pending.pop("photo_source")
            return self._submit_photo_job("edit", slug, {**pending, **params, "finish": False}, photo_source)
        params["source"] = self._source_params(job, image, prompt, seed, settings)
        return self.jobs.submit("edit", slug, params)

    def _pick_source(self, slug: str, job, image, prompt, seed, settings, stage, hires, photo, upload, caption,
                     inversion) -> tuple[Optional[dict[str, Any]], Any, str]:
        """The one source of an explain or edit, checked: ``(pending, None, caption)`` for a photo (``pending``: the
        checked photo request, :meth:`~.photo_jobs.PhotoJobs._photo_request`), else ``(None, request, prompt)`` for a
        studio portrait or a new prompt. HostError for more than one source or options of the other kind."""
        if self.one_source(job, prompt, photo, upload):
            _photo_only(stage, hires, settings)
            pending = self._photo_request(slug, photo, upload, caption, inversion)
            return pending, None, pending["caption"]
        _no_photo_options(caption, inversion)
        req = self._source_request(slug, job, image, prompt, seed, settings)
        return None, req, req.prompt

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
                          data_dir=self.data_dir, family=self.host.model_family, **settings)
        req = first_stage_request(plan, plan.seed)
        for key, value in hires.items():
            setattr(req, key, value)
        req.validate()
        self.host.check_hires(req)
        return req

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

        if ctx.params.get("photo"):
            return self._explain_photo(ctx)
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

        if ctx.params.get("photo"):
            return self._edit_photo(ctx)
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
