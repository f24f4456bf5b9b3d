"""The WebUI host: studio stages run through the WebUI's own processing objects, ControlNet and upscalers.

Everything that differs between A1111 1.10.1 and Forge lives in a *flavour* (:mod:`.flavours`), which the host
is given; this module holds what they share. ``modules`` is only imported inside functions, so the package
imports without a WebUI. The rules followed here are the ones in docs/webui-hosts.md ("Processing objects",
"Scripts inside our passes", "Queue lock and gradio wrappers"):

* ``p.is_api = True`` before ``p.scripts``/``p.script_args`` (else the built-in Sampler and Seed
  scripts overwrite steps, sampler and seed with UI defaults);
* a *filtered* script runner (:func:`.processing.filtered_runner`): a shallow copy of the WebUI's runner holding
  only copies of the scripts we want (ControlNet, optionally ADetailer) with their own ``args_from/args_to`` and
  their own ``callback_map``; the global runner and its Script objects are never touched;
* internal passes save nothing (``do_not_save_samples/grid``) and return no masks; only the first
  ``len(all_seeds)`` images are taken (ControlNet may append its detected maps);
* GPU work runs inside :meth:`WebUIHost.job`, which holds ``queue_lock``, drives ``shared.state``
  (so the WebUI progress bar moves across every pass of a plan) and registers the task id for
  ``/internal/progress``. Host calls themselves do not take the lock (it is not re-entrant).
"""

from __future__ import annotations

import contextlib
import copy
import threading
from pathlib import Path
from typing import Iterator, Optional

from PIL import Image

from lib_profile.hosts.base import (FAILED, RAN, ControlUnit, FaceDetailRequest, Host, HostError, Img2ImgRequest,
                                    InpaintRequest, Interrupted, LoraRef, Result, RunControl, StageReport,
                                    Txt2ImgRequest)
from lib_profile.hosts.webui import adetailer, faults as faults_of, lora_publish, progress as webui_progress
from lib_profile.hosts.webui.controlnet import (check_family as check_controlnet_family, missing_controlnet_message,
                                               model_file, resolve_model_name)
from lib_profile.hosts.webui.flavours import Flavour
from lib_profile.hosts.webui.model_family import FamilyFlags
from lib_profile.hosts.webui.options import restoring_opts
from lib_profile.hosts.webui.processing import filtered_runner, plan_job_count, processing_kwargs



class WebUIHost(FamilyFlags, Host):
    """Runs requests inside a running A1111 or Forge. ``flavour``: :mod:`.a1111` or :mod:`.forge`, as
    :func:`.flavours.detect_flavour` picks it. The model family and the protocol's flags that follow it
    (``model_family``, ``attention_control``, ``photo_inversion``): :class:`.model_family.FamilyFlags`."""


    def __init__(self, flavour: Flavour):
        self.flavour = flavour
        self.name = self.flavour.NAME
        self.notes: list[str] = []
        self._job_thread: Optional[int] = None  # the thread that holds the WebUI's queue for a job of ours

    # -- modules (looked up at call time: the WebUI reassigns runners, upscaler lists and opts)
    @staticmethod
    def _m(name: str):
        import importlib

        return importlib.import_module(f"modules.{name}")

    def _outdirs(self, kind: str) -> tuple[str, str]:
        opts = self._m("shared").opts
        tab = "txt2img" if kind == "txt2img" else "img2img"
        return (getattr(opts, "outdir_samples", "") or getattr(opts, f"outdir_{tab}_samples", ""),
                getattr(opts, "outdir_grids", "") or getattr(opts, f"outdir_{tab}_grids", ""))

    def samplers(self) -> list[str]:
        return list(self._m("sd_samplers").visible_sampler_names())

    def upscalers(self) -> list[str]:
        return [u.name for u in self._m("shared").sd_upscalers]

    def hires_upscalers(self) -> list[str]:
        """What hires fix can upscale with: the latent modes, then the image upscalers."""
        return [*getattr(self._m("shared"), "latent_upscale_modes", {}), *self.upscalers()]

    # -- ControlNet
    def _runner(self, kind: str):
        scripts = self._m("scripts")
        return scripts.scripts_txt2img if kind == "txt2img" else scripts.scripts_img2img

    def controlnet_present(self) -> bool:
        runner = self._runner("txt2img")
        return runner is not None and any(s.title().lower() == "controlnet" for s in runner.alwayson_scripts)

    def controlnet_models(self) -> list[str]:
        return self.flavour.controlnet_models() if self.controlnet_present() else []

    def controlnet_model(self, kind: str, wanted: Optional[str] = None) -> Optional[str]:
        """The WebUI name of the ControlNet model for ``kind`` (``pose``/``tile``), or None (then a note says
        which file to install)."""
        present, family = self.controlnet_present(), self.model_family
        name = resolve_model_name(wanted, self.controlnet_models(), kind, family)
        if name is None:  # one note for a missing extension, one per missing model
            self.notes.append(missing_controlnet_message(kind if present else "pose", present, family))
        elif wanted:
            check_controlnet_family(name, family)
        return name

    # -- LoRA
    def lora_dir(self) -> Path:
        shared = self._m("shared")
        folder = getattr(shared.cmd_opts, "lora_dir", None)
        return Path(folder) if folder else Path(self._m("paths").models_path) / "Lora"

    def publish_lora(self, lora: LoraRef) -> LoraRef:
        """Make sure the WebUI can find the LoRA by its stem: a file outside its Lora folder (the shared data
        folder's, in the cluster mode) is copied to ``<Lora>/profile-studio/`` (same name; names are unique per
        training run) unless a copy with the same SHA-256 is there, and the WebUI's LoRA list is refreshed
        (:func:`.lora_publish.publish`)."""
        published, written = lora_publish.publish(lora, self.lora_dir())
        if written:
            self.lora_list_changed()
        return published

    def check_prompt_loras(self, prompt: str, loras: Optional[list[LoraRef]] = None) -> list[str]:
        """HostError when a LoRA (``loras``, and those ``prompt``'s tags name) is for another model family than the
        WebUI's checkpoint (:func:`.loras.check_family`: the files' headers alone are read)."""
        from lib_profile.hosts.webui import loras as webui_loras

        files = [*(x.path for x in loras or []), *webui_loras.tagged_files([prompt], self.lora_dir())]
        if files:
            webui_loras.check_family(files, self.model_family)
        return []

    def take_notes(self) -> list[str]:
        """The notes made since last asked (a missing ControlNet extension or model: which file to install)."""
        notes, self.notes = self.notes, []
        return notes

    def lora_list_changed(self) -> None:
        """Rescan the WebUI's LoRA list, so a LoRA we published or deleted shows (or goes) at once."""
        from lib_profile.hosts.webui import loras as webui_loras

        webui_loras.refresh_list()

    def forget_lora(self, name: str) -> list[str]:
        """Remove the WebUI's caches of a deleted LoRA and the copy :meth:`publish_lora` made of it here."""
        from lib_profile.hosts.webui import loras as webui_loras

        return lora_publish.unpublish(name, self.lora_dir()) + webui_loras.forget(name)

    # -- running
    def _processing(self, kind: str, req: Txt2ImgRequest, extra_scripts: list[tuple[str, list]] = (),
                    own_scripts: list = (), faults: Optional[list] = None):
        processing = self._m("processing")
        req = copy.copy(req)
        req.loras = [self.publish_lora(x) for x in req.loras]
        kw = processing_kwargs(kind, req, self._outdirs(kind))
        kw.update(self.flavour.processing_extras(kind, req))
        cls = processing.StableDiffusionProcessingTxt2Img if kind == "txt2img" else \
            processing.StableDiffusionProcessingImg2Img
        p = cls(**kw)
        if kind == "inpaint":
            p.image_mask = req.mask.convert("L")  # the constructor's mask= is moved here anyway; be explicit
        p.is_api = True  # before scripts: keeps the built-in Sampler/Seed scripts from overwriting our values
        wanted: list[tuple[str, list]] = []
        if req.controlnets and self.controlnet_present():  # without it the plan still runs, guided by the prompt
            family = self.model_family
            units = [self.flavour.controlnet_unit(u, self._cn_name(u, family)) for u in req.controlnets]
            wanted.append(("controlnet", units))
        wanted.extend(extra_scripts)
        runner, args, _missing = filtered_runner(self._runner(kind), wanted, own_scripts, faults)
        p.scripts = runner
        p.script_args_value = args  # assigning the value directly skips setup(), as ADetailer does
        return p

    def _cn_name(self, unit: ControlUnit, family: str) -> str:
        name = resolve_model_name(unit.model, self.controlnet_models(), unit.kind, family)
        if name is None:
            raise HostError(f"ControlNet model {unit.model!r} is not in the WebUI's list; "
                            f"put {model_file(unit.kind, family)} in models/ControlNet and refresh")
        check_controlnet_family(name, family)
        return name

    def _run(self, kind: str, req: Txt2ImgRequest, control: Optional[RunControl],
             extra_scripts: list[tuple[str, list]] = ()) -> Result:
        req.validate()
        shared = self._m("shared")
        processing = self._m("processing")
        self.check_hires(req)
        if control and control.should_interrupt and control.should_interrupt() or shared.state.interrupted:
            raise Interrupted()
        attention = contextlib.nullcontext([])
        if control is not None and control.attention is not None:
            self.check_attention_control("Attention control (Explain word maps, Prompt-to-Prompt edits)")
            attention = self.flavour.attention(control.attention, (req.height // 8, req.width // 8),
                                               req.batch_size)
        faults: list[faults_of.Fault] = []
        self.flavour.load_model()  # the model the WebUI may still be loading (A1111 loads it in a thread at start)
        self.check_model_family("Generating")
        self.check_prompt_loras("\n".join(req.image_prompts()), req.loras)
        with attention as own_scripts:  # the flavour's patches, and scripts it needs in the runner (Forge)
            p = self._processing(kind, req, extra_scripts, own_scripts or [], faults)
            with contextlib.closing(p), restoring_opts(shared.opts, p.override_settings), \
                    webui_progress.watching(shared.state, control):
                processed = processing.process_images(p)
        n = len(processed.all_seeds or []) or req.batch_size
        images = list(processed.images[processed.index_of_first_image:][:n])
        if shared.state.interrupted or not images:
            raise Interrupted(getattr(shared.state, "sampling_step", 0), req.steps)
        generation = dict(getattr(p, "extra_generation_params", None) or {})
        reports = faults_of.controlnet_reports(
            req.controlnets, self.controlnet_present(),
            missing_controlnet_message(req.controlnets[0].kind, False, self.model_family) if req.controlnets else "",
            faults, generation)
        reports += faults_of.lora_reports([x.name for x in req.loras], getattr(processed, "comments", "") or "")
        if extra_scripts and extra_scripts[0][0] == adetailer.TITLE:
            reports.append(faults_of.adetailer_report(faults, generation, req.init_image, images[0]))
        params = req.describe()
        params["controlnets"] = [u for u, r in zip(params["controlnets"], reports) if r.ok]  # only what ran (the
        # ControlNet reports come first, one per unit)
        if kind == "txt2img" and req.hires:
            params.update(width=images[0].width, height=images[0].height, first_pass_size=[req.width, req.height])
        params.update(kind=kind, host=self.name, seed=processed.all_seeds[0], seeds=list(processed.all_seeds),
                      model=getattr(processed, "sd_model_name", None), model_hash=getattr(processed, "sd_model_hash", None),
                      sampler=processed.sampler_name, prompt=req.prompt)
        if self.notes:
            params["notes"] = list(dict.fromkeys(self.notes))
        return Result(images=images, seeds=list(processed.all_seeds), params=params,
                      infotexts=list(processed.infotexts[processed.index_of_first_image:][:n]), reports=reports)

    def txt2img(self, req: Txt2ImgRequest, control: Optional[RunControl] = None) -> Result:
        return self._run("txt2img", req, control)

    def img2img(self, req: Img2ImgRequest, control: Optional[RunControl] = None) -> Result:
        return self._run("img2img", req, control)

    def inpaint(self, req: InpaintRequest, control: Optional[RunControl] = None) -> Result:
        return self._run("inpaint", req, control)

    def adetailer_present(self) -> bool:
        return self._adetailer_script() is not None

    def _adetailer_script(self):
        runner = self._runner("img2img")
        return next((s for s in (runner.alwayson_scripts if runner is not None else [])
                     if s.title().lower() == adetailer.TITLE), None)

    def adetailer_models(self) -> list[str]:
        """ADetailer's model list as it holds it (:func:`.adetailer.models_of`); empty without ADetailer."""
        return adetailer.models_of(self._adetailer_script())

    def adetailer_detail(self, req: FaceDetailRequest, control: Optional[RunControl] = None) -> Result:
        """The face detail pass done by the ADetailer extension: an img2img with "skip img2img" on, so only
        ADetailer's inpaint runs, with ``req`` as ADetailer's arguments (:mod:`.adetailer`)."""
        if not self.adetailer_present():
            raise HostError("ADetailer is not installed in this WebUI; use the built-in face detail pass")
        return self._run("img2img", adetailer.image_request(req), control,
                         [(adetailer.TITLE, adetailer.script_args(req))])

    def upscale(self, image: Image.Image, scale: float, upscaler: str = "Lanczos",
                reports: Optional[list[StageReport]] = None) -> Image.Image:
        """The WebUI's upscaler; one that fails to load is only printed by the WebUI, which then resizes with
        Lanczos: that is told in ``reports``."""
        shared = self._m("shared")
        found = next((u for u in shared.sd_upscalers if u.name == upscaler), None)
        if found is None:
            raise HostError(f"Unknown upscaler {upscaler!r}; this WebUI has: {', '.join(self.upscalers())}")
        before = faults_of.console_errors_now()
        out = found.scaler.upscale(image.convert("RGB"), scale, found.data_path)
        if shared.state.interrupted:
            raise Interrupted()
        errors = faults_of.new_console_errors(before)
        if reports is not None:
            reports.append(StageReport(f"upscaler {upscaler}", FAILED,
                                       f"{errors[0]}; the WebUI resized with Lanczos instead") if errors
                           else StageReport(f"upscaler {upscaler}", RAN))
        return out

    def token_chunks(self, prompt: str) -> Optional[list[list[int]]]:
        """The prompt's 77-id CLIP chunks exactly as this WebUI splits them (A1111 breaks long prompts at
        commas), so word positions for explain and edit line up. Forge loads its model only at its first
        generation: before that, a request is checked with our own tokenizer (None), and a job - which holds the
        WebUI's queue - loads the model first."""
        from lib_profile.prompts.parse import extract_networks

        text = extract_networks(prompt)[0]
        chunks = self.flavour.token_chunks(text)
        if chunks is None and self._job_thread == threading.get_ident():
            self.flavour.load_model()
            chunks = self.flavour.token_chunks(text)
        return chunks

    def checkpoint_path(self) -> str:
        """The checkpoint file selected in the WebUI (what the user generates with, so what we train on)."""
        sd_models = self._m("sd_models")
        info = None
        if hasattr(sd_models, "select_checkpoint"):
            info = sd_models.select_checkpoint()
        if info is None:
            info = getattr(getattr(self._m("shared"), "sd_model", None), "sd_checkpoint_info", None)
        if info is None or not getattr(info, "filename", None):
            raise HostError("No checkpoint is selected in the WebUI; pick an SD1.5 or SDXL checkpoint at the top of "
                            "the page")
        return str(info.filename)

    def checkpoints(self) -> dict[str, str]:
        """The WebUI's checkpoint list (``sd_models.checkpoints_list``): each by its title ("name.safetensors
        [hash]"), its name as shown, its file name and its stem."""
        out = {}
        for title, info in dict(getattr(self._m("sd_models"), "checkpoints_list", {}) or {}).items():
            filename = getattr(info, "filename", None)
            if filename:
                for name in (title, getattr(info, "name", None), getattr(info, "model_name", None),
                             Path(filename).name, Path(filename).stem):
                    if name:
                        out.setdefault(str(name), str(filename))
        return out

    # -- jobs
    def control(self) -> RunControl:
        """Interrupt through the WebUI's own Interrupt button / ``POST /sdapi/v1/interrupt``."""
        shared = self._m("shared")
        return RunControl(should_interrupt=lambda: bool(shared.state.interrupted))

    @contextlib.contextmanager
    def job(self, id_task: str, job_count: int, title: str = "Profile Studio") -> Iterator[None]:
        """Hold the WebUI's queue lock for a whole job and show it in the WebUI's progress bar:
        ``job_count`` passes (``process_images`` calls) make up 100%."""
        shared = self._m("shared")
        progress = self._m("progress")
        queue_lock = self._m("call_queue").queue_lock
        progress.add_task_to_queue(id_task)
        with queue_lock:
            shared.state.begin(job=id_task)
            progress.start_task(id_task)
            shared.state.job_count = plan_job_count(job_count)
            shared.state.textinfo = title
            outer, self._job_thread = self._job_thread, threading.get_ident()
            try:
                yield
            finally:
                self._job_thread = outer
                progress.finish_task(id_task)
                shared.state.end()


    @contextlib.contextmanager
    def training_slot(self, id_task: str, steps: int) -> Iterator[None]:
        """Training runs in a subprocess on the same GPU: hold the queue (no generation meanwhile), move the
        WebUI's model off the GPU, and bring it back afterwards. The WebUI's progress bar shows the training
        (:meth:`training_progress`); its sampling fields are cleared again at the end. An SDXL/SD2 model loaded in
        the WebUI is refused first, before anything is unloaded."""
        self.check_model_family("Training")
        with self.job(id_task, 1, "Profile Studio: training"):
            state = self._m("shared").state
            self.training_progress(0, steps)
            self.flavour.free_vram()
            try:
                yield
            finally:
                state.sampling_step, state.sampling_steps = 0, 0
                self.flavour.restore_vram()

    def denoiser(self, prompts: list[str], loras: Optional[list[LoraRef]] = None, clip_skip: int = 1):
        """The WebUI's loaded SD1.5 or SDXL model lent for photo inversion (:func:`.denoiser.lent`): inside this
        thread's :meth:`job` or else holding the queue itself; LoRAs, CLIP skip and patches undone on exit."""
        from lib_profile.hosts.webui.denoiser import lent

        return lent(self, prompts, loras, clip_skip)

    def training_progress(self, step: int, steps: int, text: str = "") -> None:
        """Map a training's ``step`` of ``steps`` onto what ``/internal/progress`` computes its bar from
        (``job_no/job_count + sampling_step/sampling_steps/job_count``): one job, the steps as its sampling steps.
        All four fields are set at every call: the WebUI resets ``job_count`` outside its queue lock (every
        ``wrap_gradio_call`` UI action ends with ``job_count = 0``), which would otherwise pin the bar at 0."""
        state = self._m("shared").state
        state.job_no, state.job_count = 0, 1
        state.sampling_step, state.sampling_steps = max(0, min(int(step), int(steps))), max(1, int(steps))
        if text:
            state.textinfo = text
