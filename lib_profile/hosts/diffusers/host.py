"""The diffusers host: the host protocol on diffusers pipelines, from a single-file SD1.5 or SDXL checkpoint.

Runs every test here (CPU, tiny model) and headless use (CPU or GPU). The model is loaded once;
pipelines are thin views over the same modules. Prompts are encoded the WebUI's way (emphasis,
75-token chunks, CLIP skip), LoRAs are merged for the call and restored after it, and every image
has its own CPU generator seeded like the WebUI (seed, seed+1, ...), so a seed gives the same
picture on any device and batch size. What differs per model family (loading, pipelines, prompt encoding, size
conditioning, what is not there yet) comes from the family's :class:`~.engines.Engine`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any, Optional

from PIL import Image

from lib_profile import paths
from lib_profile.attention.clock import tick
from lib_profile.hosts.base import (RAN, ControlUnit, Host, HostError, Img2ImgRequest, InpaintRequest, Interrupted,
                                    Result, RunControl, StageReport, Txt2ImgRequest)
from lib_profile.hosts.diffusers import engines, masking, samplers
from lib_profile.hosts.diffusers.checkpoint import read_state_dict
from lib_profile.hosts.diffusers.controlnet_file import load_controlnet
from lib_profile.hosts.diffusers.engines import resolve_checkpoint, tiny_controlnet  # noqa: F401 - this module's API
from lib_profile.hosts.diffusers.scheduled_embeds import ScheduledEmbeds
from lib_profile.infotext import infotext
from lib_profile.lora import apply as lora_apply, tags as lora_tags
from lib_profile.prompts import parse as prompts
from lib_profile.prompts.schedule import total_steps

UPSCALERS = {"None": None, "Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST, "Bicubic": Image.BICUBIC}
LATENT_UPSCALERS = {"Latent": "bilinear", "Latent (nearest)": "nearest", "Latent (bicubic)": "bicubic"}  # hires fix


class DiffusersHost(Host):
    name = "diffusers"
    pads_prompt_to_negative = True  # _embeds: prompt and negative prompt padded to the same chunk count
    attention_control = True  # diffusers/attention.py
    photo_inversion = True  # diffusers/denoiser.py

    def __init__(self, checkpoint: str | Path, device: str | None = None, dtype: str | None = None,
                 data_dir: str | Path | None = None, controlnets: Optional[dict[str, str]] = None,
                 lora_dirs: Optional[list[str | Path]] = None, lazy: bool = False):
        """``controlnets``: ControlNet model files by kind (``{"pose": path, "tile": path}``), offered to plans;
        ``lora_dirs``: folders where ``<lora:NAME:W>`` tags are looked up before the data folder's ``loras/``
        (which holds the identities' LoRAs). ``lazy``: load the checkpoint on the first use of :attr:`model`
        (a cluster front that runs no job may never need it), not now."""
        import torch

        self.data_dir = data_dir
        self.checkpoint = resolve_checkpoint(checkpoint, data_dir)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            dtype = "float16" if self.device.type == "cuda" else "float32"
        self.dtype = getattr(torch, dtype)
        self.engine = engines.checkpoint_engine(self.checkpoint)  # from the file's tensor names, before loading
        self.attention_control = self.engine.has("attention")  # the protocol's flags, as this family has them
        self.photo_inversion = self.engine.has("inversion")
        self.model_family = self.engine.family
        self._model, self._load_lock = None, threading.Lock()
        _ = lazy or self.model  # not lazy: load now, so a bad checkpoint fails here
        self._controlnets: dict[str, Any] = {}
        self.controlnet_files = {k: str(v) for k, v in (controlnets or {}).items() if v}
        self.lora_dirs = [Path(d).expanduser() for d in (lora_dirs or [])]
        self._pipes: dict[tuple, Any] = {}
        self._lock = threading.Lock()  # one generation at a time: LoRAs are merged into shared weights

    @property
    def model(self):
        """The checkpoint's modules (SD15) on this host's device, loaded on first use; HostError for a bad file."""
        with self._load_lock:
            if self._model is None:
                model = self.engine.load(self.checkpoint, paths.tokenizer_dir(self.data_dir),
                                         read_state_dict(self.checkpoint))
                for module in (model.unet, model.vae, *filter(None, self.engine.text_encoders(model))):
                    module.to(self.device, self.dtype)
                self._model = model
            return self._model

    # ------------------------------------------------------------------ protocol

    def checkpoint_path(self) -> str:
        return str(self.checkpoint)

    def unsupported(self, what: str) -> HostError:  # what this family lacks is refused naming the family
        lacks = [engines.FEATURES[f] for f in self.engine.lacks]
        return self.engine.refusal(what) if what in lacks else super().unsupported(what)

    def check_attention_control(self, what: str) -> None:
        if not self.engine.has("attention"):
            raise self.engine.refusal(what)

    def _loras(self, refs: list) -> dict[str, Any]:
        """The arguments of ``lora_apply.applied``/``check`` for ``refs`` on this model."""
        text, text_2 = self.engine.text_encoders(self.model)
        return dict(loras=[(x.path, x.weight) for x in refs], unet=self.model.unet, text_encoder=text,
                    text_encoder_2=text_2, family=self.engine.family)

    def controlnet_model(self, kind: str, wanted: Optional[str] = None) -> Optional[str]:
        """The ControlNet file for ``kind``: the one given at start (``--controlnet-pose``/``--controlnet-tile``),
        or ``wanted`` when it names one of those (by path, file name or stem); HostError for any other name - a
        request never picks a file by path."""
        if not self.engine.has("controlnet"):  # the studio then asks for the pose by prompt
            if wanted:
                raise self.engine.refusal(f"ControlNet model {wanted!r}")
            return None
        if not wanted:
            return self.controlnet_files.get(kind)
        known = {str(p): str(p) for p in self.controlnet_files.values() if p}
        for path in list(known.values()):
            known.setdefault(Path(path).name, path)
            known.setdefault(Path(path).stem, path)
        if wanted not in known:
            names = sorted({Path(p).name for p in known.values()})
            raise HostError(f"Unknown ControlNet model {wanted!r}; this host has {', '.join(names) or 'none'} "
                            "(given at start with --controlnet-pose / --controlnet-tile)")
        return known[wanted]

    def lora_folders(self) -> list[Path]:
        """Where prompt tags' LoRAs are looked up, in order: ``lora_dirs``, then the data folder's ``loras/``."""
        return [*self.lora_dirs, paths.data_dir(self.data_dir, create=False) / "loras"]

    def prompt_loras(self, req: Txt2ImgRequest) -> tuple[list, list]:
        """The LoRAs a request applies, ``(from its loras, from its prompt's <lora:NAME:W> tags)``; a tag naming
        the same LoRA as ``loras`` wins, as in the WebUI. HostError for an unknown name or a bad tag."""
        tagged = lora_tags.prompt_loras(req.prompts or [req.prompt], self.lora_folders())
        names = {x.name for x in tagged}
        return [x for x in req.loras if x.name not in names], tagged

    def check_prompt_loras(self, prompt: str, loras: Optional[list] = None) -> list[str]:
        """Find the LoRAs ``prompt``'s tags name and check them (and ``loras``) against the model, changing
        nothing: the notes (modules that match no layer), or HostError (unknown name, another model family)."""
        req = Txt2ImgRequest(prompt=prompt or "", loras=list(loras or []))
        kept, tagged = self.prompt_loras(req)
        return lora_apply.check(**self._loras(kept + tagged))

    @contextlib.contextmanager
    def denoiser(self, prompts: list[str], loras: Optional[list] = None, clip_skip: int = 1):
        """The loaded model as a ``Denoiser`` (``diffusers/denoiser.py``), the LoRAs of ``loras`` and of the prompts'
        tags merged (a tag wins over a ref of the same name), the host's lock held; restored on exit."""
        from lib_profile.hosts.diffusers.denoiser import DENOISERS

        if not self.engine.has("inversion"):
            raise self.engine.refusal(engines.FEATURES["inversion"])
        req = Txt2ImgRequest(prompt=prompts[0] if prompts else "", prompts=list(prompts), batch_size=len(prompts) or 1,
                             loras=list(loras or []))
        kept, tagged = self.prompt_loras(req)
        with self._lock, lora_apply.applied(**self._loras(kept + tagged)) as notes:
            yield DENOISERS[self.engine.family](self.model, self.device, self.dtype, clip_skip, {
                "model": self.model.name, "model_hash": self.model.shorthash, "lora_notes": list(notes),
                "loras": [{"path": x.path, "weight": x.weight} for x in kept + tagged]})

    def samplers(self) -> list[str]:
        return samplers.sampler_names()

    def upscalers(self) -> list[str]:
        return list(UPSCALERS)

    def hires_upscalers(self) -> list[str]:
        return [*LATENT_UPSCALERS, *UPSCALERS]

    def txt2img(self, req: Txt2ImgRequest, control: Optional[RunControl] = None) -> Result:
        req.validate()
        return self._run("txt2img", req, control)

    def img2img(self, req: Img2ImgRequest, control: Optional[RunControl] = None) -> Result:
        req.validate()
        return self._run("img2img", req, control)

    def inpaint(self, req: InpaintRequest, control: Optional[RunControl] = None) -> Result:
        req.validate()
        original = req.init_image.convert("RGB")
        region = masking.crop_region(req.mask, req.padding, req.width, req.height) if req.only_masked else None
        if req.only_masked and region is None:
            raise HostError("The inpaint mask is empty: nothing to repaint")
        if region is not None:
            crop_img = original.crop(region).resize((req.width, req.height), Image.LANCZOS)
            crop_mask = masking.soft_mask(req.mask, req.mask_blur).crop(region).resize((req.width, req.height), Image.LANCZOS)
        else:
            crop_img = original.resize((req.width, req.height), Image.LANCZOS)
            crop_mask = masking.soft_mask(req.mask, req.mask_blur).resize((req.width, req.height), Image.LANCZOS)
        sub = InpaintRequest(**{**req.__dict__, "init_image": crop_img, "mask": crop_mask})
        result = self._run("inpaint", sub, control)
        result.images = [masking.paste_back(original, img, region, req.mask, req.mask_blur) for img in result.images]
        result.params["inpaint_region"] = list(region) if region else None
        return result

    def upscale(self, image: Image.Image, scale: float, upscaler: str = "Lanczos",
                reports: Optional[list[StageReport]] = None) -> Image.Image:
        if reports is not None:  # the resampling filters cannot fail quietly
            reports.append(StageReport(f"upscaler {upscaler}", RAN))
        if upscaler not in UPSCALERS:
            raise HostError(f"Unknown upscaler {upscaler!r} for the diffusers host; choose one of {', '.join(UPSCALERS)}")
        if not 1.0 <= scale <= 8.0:
            raise HostError(f"upscale factor must be within 1..8, not {scale}")
        if UPSCALERS[upscaler] is None or scale == 1.0:
            return image.copy()
        size = (int(image.width * scale) // 8 * 8, int(image.height * scale) // 8 * 8)
        return image.resize(size, UPSCALERS[upscaler])

    # ------------------------------------------------------------------ internals

    def controlnet(self, path: str | Path):
        key = str(Path(path).resolve())
        if key not in self._controlnets:
            if not Path(path).is_file():
                raise HostError(f"ControlNet model not found: {path}")
            self._controlnets[key] = load_controlnet(path, self.engine.family, self.model.unet.config).to(
                self.device, self.dtype)
        return self._controlnets[key]

    def pipeline(self, kind: str, units: list[ControlUnit] = ()):
        """A diffusers pipeline of ``kind`` over the loaded modules (cached; no weights copied)."""
        import diffusers

        models = tuple(self.controlnet(u.model) for u in units)
        key = (kind, tuple(id(m) for m in models))
        if key in self._pipes:
            return self._pipes[key]
        cls = getattr(diffusers, self.engine.pipelines[(kind, bool(models))])
        parts = dict(self.engine.parts(self.model),
                     scheduler=samplers.make_scheduler("Euler", None, self.model.scheduler_config)[0])
        if models:
            parts["controlnet"] = list(models) if len(models) > 1 else models[0]
        pipe = cls(**parts)
        pipe.set_progress_bar_config(disable=True)
        self._pipes[key] = pipe
        return pipe

    def encode_prompts(self, positive: str, negative: str, clip_skip: int):
        """(cond, uncond) of equal chunk counts, shape (1, 77*k, hidden)."""
        import torch

        te, tok = self.model.text_encoder, self.model.tokenizer
        with torch.no_grad():
            cond, n = prompts.encode(te, tok, positive, clip_skip)
            uncond, m = prompts.encode(te, tok, negative, clip_skip, min_chunks=n)
            if m > n:
                cond, _ = prompts.encode(te, tok, positive, clip_skip, min_chunks=m)
        return cond, uncond

    def _run(self, kind: str, req: Txt2ImgRequest, control: Optional[RunControl]) -> Result:
        with self._lock:
            return self._run_locked(kind, req, control)

    def _run_locked(self, kind: str, req: Txt2ImgRequest, control: Optional[RunControl]) -> Result:
        import torch

        control = control or RunControl()
        seeds = req.resolved_seeds()
        started = time.perf_counter()
        hires = kind == "txt2img" and req.hires
        self.check_hires(req)
        kept, tagged = self.prompt_loras(req)
        refs = kept + tagged
        if req.controlnets and not self.engine.has("controlnet"):
            raise self.engine.refusal(engines.FEATURES["controlnet"])
        if control.attention is not None:
            self.check_attention_control(engines.FEATURES["attention"])
        with lora_apply.applied(**self._loras(refs)) as lora_notes, torch.no_grad():
            embeds = self._embeds(req, len(seeds))
            if not hires:
                images, labels = self._pass(kind, req, control, seeds, embeds)
            else:  # the WebUI's hires fix: upscale the first pass, then denoise it again at the larger size
                second = self._hires_request(req)
                progress = (0, samplers.run_steps(req) + samplers.run_steps(second))
                latent = req.hires_upscaler in LATENT_UPSCALERS
                first, labels = self._pass(kind, req, control, seeds, embeds, progress=progress,
                                           output="latent" if latent else "pil")
                width, height = second.width, second.height
                if latent:
                    init = torch.nn.functional.interpolate(first, size=(height // 8, width // 8),
                                                           mode=LATENT_UPSCALERS[req.hires_upscaler])
                else:
                    method = UPSCALERS[req.hires_upscaler] or Image.LANCZOS
                    init = [img.resize((width, height), method) for img in first]
                images, _labels = self._pass("img2img", second, control, seeds, self._embeds(req, len(seeds), True),
                                             init=init,
                                             progress=(samplers.run_steps(req), progress[1]))
        params = req.describe()
        params.update(
            kind=kind, host=self.name, sampler=labels[0], scheduler=labels[1], seed=seeds[0],
            seeds=seeds, model=self.model.name, model_hash=self.model.shorthash,
            seconds=round(time.perf_counter() - started, 3),
        )
        if hires:
            params.update(width=images[0].width, height=images[0].height, first_pass_size=[req.width, req.height])
        params["loras"] = [{"path": x.path, "weight": x.weight} for x in kept]
        if tagged:
            params["prompt_loras"] = [{"path": x.path, "weight": x.weight} for x in tagged]
        if lora_notes:  # infotext() writes them as "LoRA notes"
            params["lora_notes"] = list(lora_notes)
        texts = [infotext({**params, "seed": s, "prompt": p}) for s, p in zip(seeds, req.image_prompts())]
        reports = [StageReport(f"ControlNet {u.kind}", RAN) for u in req.controlnets]  # run here, or raised
        reports += [StageReport(f"LoRA {x.name}", RAN, next((n for n in lora_notes if f" of {x.name} " in n), ""))
                    for x in refs]
        return Result(images=images, seeds=seeds, params=params, infotexts=texts, reports=reports)

    @staticmethod
    def _hires_request(req: Txt2ImgRequest) -> Img2ImgRequest:
        """The hires pass of ``req`` as an img2img request (its init image is given apart)."""
        width, height = req.hires_size()
        return Img2ImgRequest(**{**req.__dict__, "width": width // 8 * 8, "height": height // 8 * 8,
                                 "steps": req.hires_steps or req.steps, "hires_scale": 1.0,
                                 "denoising_strength": req.hires_denoising})

    def _embeds(self, req: Txt2ImgRequest, n: int, hires: bool = False) -> ScheduledEmbeds:
        """Prompt and negative-prompt embeddings for ``n`` images over a pass of ``req`` (its hires fix pass with
        ``hires``), scheduled by model evaluation as the WebUI's prompt editing ``[a:b:when]`` and alternation
        ``[a|b]`` say (:mod:`lib_profile.prompts.schedule`)."""
        pattern = samplers.resolve(req.sampler, req.scheduler)[0].evaluations
        steps = total_steps(req.steps, pattern)
        hires_steps = total_steps(req.hires_steps or req.steps, pattern) if hires else None
        images = list(req.prompts) if req.prompts else [req.prompt] * n
        return ScheduledEmbeds(None, None, images, req.negative_prompt, req.clip_skip, steps, hires_steps,
                               encoder=self.engine.prompt_encoder(self.model, req.clip_skip))

    def _pass(self, kind: str, req: Txt2ImgRequest, control: RunControl, seeds: list[int], embeds: ScheduledEmbeds,
              init=None, progress: tuple[int, int] = (0, 0), output: str = "pil"):
        """One sampling pass: ``(images or latents, (sampler label, schedule label))``. ``init``: the init
        images (or latents) instead of ``req.init_image``; ``progress``: (steps before this pass, steps in all)
        for the step reports of a run of several passes."""
        import torch

        scheduler, sampler_label, schedule_label = samplers.make_scheduler(
            req.sampler, req.scheduler, self.model.scheduler_config)
        if hasattr(scheduler, "noise_sampler_seed"):  # DPM++ SDE's Brownian tree: seeded per image like the WebUI,
            scheduler.noise_sampler_seed = list(seeds)  # not at random (the same seed must give the same image)
        pipe = self.pipeline(kind, req.controlnets)
        pipe.scheduler = scheduler
        offset, overall = progress

        run_steps = samplers.run_steps(req)
        pattern = samplers.resolve(req.sampler, req.scheduler)[0].evaluations

        def on_step_end(pipeline, step_index, timestep, callback_kwargs):
            """After each model evaluation (diffusers' loop runs one per timestep entry); a sampler step is done
            after its last evaluation (second-order samplers make two a step: ``attention.clock``). The next
            evaluation's conditioning is set here when the prompt is scheduled (``[a:b:when]``, ``[a|b]``)."""
            if embeds.changes:
                guided = pipeline.do_classifier_free_guidance
                callback_kwargs["prompt_embeds"] = embeds.pipeline_embeds(step_index + 1, guided)
                if "add_text_embeds" in callback_kwargs:  # SDXL's pooled text follows the scheduled prompt
                    callback_kwargs["add_text_embeds"] = embeds.pipeline_pooled(step_index + 1, guided)
            now = tick(step_index, run_steps, pattern)
            if not now.last:
                return callback_kwargs
            total = overall or run_steps
            if control.on_step is not None:
                control.on_step(offset + now.step + 1, total)
            if control.should_interrupt is not None and control.should_interrupt():
                raise Interrupted(offset + now.step + 1, total)
            if control.attention is not None and "latents" in callback_kwargs:
                callback_kwargs["latents"] = control.attention.step_end(now.step, callback_kwargs["latents"])
            return callback_kwargs

        steps = samplers.schedule_steps(req)
        args: dict[str, Any] = dict(
            num_inference_steps=steps, guidance_scale=req.cfg_scale,
            generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
            callback_on_step_end=on_step_end, output_type=output,
            callback_on_step_end_tensor_inputs=(["latents", "prompt_embeds", *self.engine.extra_step_inputs]
                                                if embeds.changes else ["latents"]),
            **self.engine.pass_args(req.width, req.height),
        )
        args["prompt_embeds"], args["negative_prompt_embeds"] = embeds.at(0)
        if embeds.pooled_at(0) is not None:
            args["pooled_prompt_embeds"], args["negative_pooled_prompt_embeds"] = embeds.pooled_at(0)
        if kind == "txt2img":
            args.update(width=req.width, height=req.height)
        else:
            if init is None:
                init = req.init_image.convert("RGB").resize((req.width, req.height), Image.LANCZOS)
            args.update(image=init, strength=req.denoising_strength)
            if kind == "inpaint":
                args.update(mask_image=req.mask.convert("L"), width=req.width, height=req.height)
        if req.controlnets:
            maps = [u.image.convert("RGB").resize((req.width, req.height), Image.LANCZOS) for u in req.controlnets]
            many = len(maps) > 1
            args["image" if kind == "txt2img" else "control_image"] = maps if many else maps[0]
            args.update(
                controlnet_conditioning_scale=[u.weight for u in req.controlnets] if many else req.controlnets[0].weight,
                control_guidance_start=[u.guidance_start for u in req.controlnets],
                control_guidance_end=[u.guidance_end for u in req.controlnets],
            )
        attention = contextlib.nullcontext()
        if control.attention is not None:
            from lib_profile.hosts.diffusers.attention import controlled

            attention = controlled(self.model.unet, control.attention, run_steps, len(seeds), pattern)
        with attention:
            return pipe(**args).images, (sampler_label, schedule_label)

