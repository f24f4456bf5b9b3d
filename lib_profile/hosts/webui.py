"""The WebUI host: studio stages run through the WebUI's own processing objects, ControlNet and upscalers.

Everything that differs between A1111 1.10.1 and Forge lives in a *flavour* (``a1111.py``,
``forge.py``); this module holds what they share. ``modules`` is only imported inside functions, so
the package imports without a WebUI. The rules followed here are the ones in webui-host.md:

* ``p.is_api = True`` before ``p.scripts``/``p.script_args`` (else the built-in Sampler and Seed
  scripts overwrite steps, sampler and seed with UI defaults);
* a *filtered* script runner: a shallow copy of the WebUI's runner holding only copies of the
  scripts we want (ControlNet, optionally ADetailer) with their own ``args_from/args_to`` and their own
  ``callback_map``; the global runner and its Script objects are never touched;
* internal passes save nothing (``do_not_save_samples/grid``) and return no masks; only the first
  ``len(all_seeds)`` images are taken (ControlNet may append its detected maps);
* GPU work runs inside :meth:`WebUIHost.job`, which holds ``queue_lock``, drives ``shared.state``
  (so the WebUI progress bar moves across every pass of a plan) and registers the task id for
  ``/internal/progress``. Host calls themselves do not take the lock (it is not re-entrant).
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
from PIL import Image

from lib_profile.hosts import webui_faults as faults_of
from lib_profile.hosts import webui_progress
from lib_profile.hosts.base import (FAILED, RAN, ControlUnit, Host, HostError, Img2ImgRequest, InpaintRequest,
                                    Interrupted, LoraRef, Result, RunControl, StageReport, Txt2ImgRequest)
from lib_profile.hosts.prompt import lora_tags
from lib_profile.hosts.webui_options import restoring_opts

# ControlNet models looked for when the user has not named one (stems, as the ControlNet folder holds them).
DEFAULT_CN_MODELS = {
    "pose": ("control_v11p_sd15_openpose", "control_sd15_openpose", "openpose"),
    "tile": ("control_v11f1e_sd15_tile", "control_v11u_sd15_tile", "tile"),
}
CN_KEYWORDS = {"pose": "openpose", "tile": "tile"}
CN_MODEL_FILES = {"pose": "control_v11p_sd15_openpose.pth", "tile": "control_v11f1e_sd15_tile.pth"}
LORA_SUBFOLDER = "profile-studio"


# ---------------------------------------------------------------- pure helpers (tested without a WebUI)

def model_stem(name: str) -> str:
    """``"control_v11p_sd15_openpose [cab727d4]"`` -> ``"control_v11p_sd15_openpose"``; paths lose folder and suffix."""
    base = name.split(" [", 1)[0].strip()
    return Path(base).stem if any(base.endswith(s) for s in (".pth", ".safetensors", ".ckpt", ".bin")) else \
        Path(base).name


def resolve_model_name(wanted: Optional[str], available: list[str], kind: Optional[str] = None) -> Optional[str]:
    """The exact WebUI name (``"stem [hash]"``) for a wanted model: an exact name, a stem, or a file path;
    ``None`` asks for the default model of ``kind``. ``None`` back when nothing matches."""
    names = [a for a in available if a and a != "None"]
    if wanted:
        if wanted in names:
            return wanted
        stem = model_stem(wanted).lower()
        for name in names:
            if model_stem(name).lower() == stem:
                return name
        return None
    for preferred in DEFAULT_CN_MODELS.get(kind or "", ()):
        for name in names:
            if model_stem(name).lower() == preferred:
                return name
    keyword = CN_KEYWORDS.get(kind or "")
    for name in names:  # any SD1.5 model of that kind, e.g. "my_openpose_fp16"
        stem = model_stem(name).lower()
        if keyword and keyword in stem and "xl" not in stem:
            return name
    return None


def missing_controlnet_message(kind: str, extension_present: bool) -> str:
    file = CN_MODEL_FILES[kind]
    if not extension_present:
        return (f"The ControlNet extension is not installed, so the {kind} is guided by the prompt only. Install "
                f"sd-webui-controlnet (A1111; Forge has it built in) and put {file} in models/ControlNet.")
    return f"No {kind} ControlNet model found: put {file} in models/ControlNet and press refresh."


def processing_kwargs(kind: str, req: Txt2ImgRequest, outdirs: tuple[str, str]) -> dict[str, Any]:
    """Constructor kwargs of ``StableDiffusionProcessingTxt2Img/Img2Img`` for a request (no flavour extras)."""
    kw: dict[str, Any] = dict(
        outpath_samples=outdirs[0], outpath_grids=outdirs[1],
        prompt=[lora_tags(x, req.loras) for x in req.prompts] if req.prompts else lora_tags(req.prompt, req.loras),
        negative_prompt=req.negative_prompt,
        seed=list(req.seeds) if req.seeds else req.resolved_seeds()[0], subseed=-1, subseed_strength=0, sampler_name=req.sampler,
        scheduler=req.scheduler, batch_size=req.batch_size, n_iter=1, steps=req.steps, cfg_scale=req.cfg_scale,
        width=req.width, height=req.height, do_not_save_samples=True, do_not_save_grid=True,
        override_settings={"CLIP_stop_at_last_layers": req.clip_skip, "return_mask": False,
                           "return_mask_composite": False, "samples_save": False},
        override_settings_restore_afterwards=True,
    )
    if kind == "txt2img" and req.hires:  # the WebUI's own hires fix
        kw.update(enable_hr=True, hr_scale=req.hires_scale, hr_upscaler=req.hires_upscaler,
                  hr_second_pass_steps=req.hires_steps, denoising_strength=req.hires_denoising)
    if kind != "txt2img":
        assert isinstance(req, Img2ImgRequest)
        kw.update(init_images=[req.init_image.convert("RGB")], resize_mode=0,
                  denoising_strength=req.denoising_strength)
    if kind == "inpaint":
        assert isinstance(req, InpaintRequest)
        kw.update(mask_blur=req.mask_blur, inpainting_fill=1, inpaint_full_res=req.only_masked,
                  inpaint_full_res_padding=req.padding, inpainting_mask_invert=0)
    return kw


def filtered_runner(base, wanted: list[tuple[str, list]], own_scripts: list = (),
                    faults: Optional[list] = None):
    """A copy of a WebUI ``ScriptRunner`` holding copies of only the wanted always-on scripts, each
    given ``args`` at its own slice. ``wanted``: ``[(lower-case title, args), ...]``;
    ``own_scripts``: script objects of ours to run too (no args); ``faults``: a list the copies' hooks record
    their exceptions in (:func:`webui_faults.watch`). Returns ``(runner, script_args, titles not found)``."""
    runner = copy.copy(base)
    runner.alwayson_scripts = []
    runner.selectable_scripts = []
    runner.scripts = []
    runner.callback_map = {}  # the copy must not share the global runner's per-hook cache
    args: list = []
    missing: list[str] = []
    for title, script_args in wanted:
        script = next((s for s in base.alwayson_scripts if s.title().lower() == title), None)
        if script is None:
            missing.append(title)
            continue
        mine = copy.copy(script)
        mine.args_from, mine.args_to = len(args), len(args) + len(script_args)
        if faults is not None:
            faults_of.watch(mine, faults)
        args.extend(script_args)
        runner.alwayson_scripts.append(mine)
        runner.scripts.append(mine)
    for script in own_scripts:
        script.args_from = script.args_to = len(args)
        runner.alwayson_scripts.append(script)
        runner.scripts.append(script)
    return runner, args, missing


_FAMILY_FLAGS = (("is_sdxl", "SDXL"), ("is_sd2", "SD2"), ("is_sd3", "SD3"), ("is_ssd", "SSD-1B"))
_FAMILY_CLASSES = (("XL", "SDXL"), ("StableDiffusion3", "SD3"), ("Flux", "Flux"), ("Chroma", "Chroma"))


def model_family(sd_model) -> Optional[str]:
    """The family of the WebUI's loaded model when it is not SD1.x (``"SDXL"``, ``"SD2"``, ``"SD3"``, ...), from
    the flags both WebUIs set (``is_sdxl``, ``is_sd2``, ...) and Forge's engine class names; None for SD1.x or for
    no model loaded yet (Forge's ``FakeInitialModel`` before its first generation)."""
    if sd_model is None:
        return None
    for flag, family in _FAMILY_FLAGS:
        if getattr(sd_model, flag, False) is True:
            return family
    name = type(sd_model).__name__
    return next((family for part, family in _FAMILY_CLASSES if part in name), None)


def plan_job_count(n_passes: int) -> int:
    """The WebUI counts one job per ``process_images`` call (n_iter=1); the bar spans them all."""
    return max(1, int(n_passes))


# ---------------------------------------------------------------- the host


class WebUIHost(Host):
    """Runs requests inside a running A1111 or Forge. ``flavour`` is :mod:`a1111` or :mod:`forge`."""

    def __init__(self, flavour=None):
        self.flavour = flavour or detect_flavour()
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
        present = self.controlnet_present()
        name = resolve_model_name(wanted, self.controlnet_models(), kind)
        if name is None:  # one note for a missing extension, one per missing model
            self.notes.append(missing_controlnet_message(kind if present else "pose", present))
        return name

    # -- LoRA
    def lora_dir(self) -> Path:
        shared = self._m("shared")
        folder = getattr(shared.cmd_opts, "lora_dir", None)
        return Path(folder) if folder else Path(self._m("paths").models_path) / "Lora"

    def publish_lora(self, lora: LoraRef) -> LoraRef:
        """Make sure the WebUI can find the LoRA by its stem: files outside its Lora folder are copied to
        ``<Lora>/profile-studio/`` (same name; names are unique per training run)."""
        src = Path(lora.path)
        root = self.lora_dir()
        try:
            src.resolve().relative_to(root.resolve())
            return lora
        except ValueError:
            pass
        dest = root / LORA_SUBFOLDER / src.name
        if not dest.exists() or dest.stat().st_size != src.stat().st_size:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".partial")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        return LoraRef(str(dest), lora.weight)

    def lora_list_changed(self) -> None:
        """Rescan the WebUI's LoRA list, so a LoRA we published or deleted shows (or goes) at once."""
        from lib_profile.hosts import webui_loras

        webui_loras.refresh_list()

    def forget_lora(self, name: str) -> list[str]:
        from lib_profile.hosts import webui_loras

        return webui_loras.forget(name)

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
            units = [self.flavour.controlnet_unit(u, self._cn_name(u)) for u in req.controlnets]
            wanted.append(("controlnet", units))
        wanted.extend(extra_scripts)
        runner, args, _missing = filtered_runner(self._runner(kind), wanted, own_scripts, faults)
        p.scripts = runner
        p.script_args_value = args  # assigning the value directly skips setup(), as ADetailer does
        return p

    def _cn_name(self, unit: ControlUnit) -> str:
        name = resolve_model_name(unit.model, self.controlnet_models(), unit.kind)
        if name is None:
            raise HostError(f"ControlNet model {unit.model!r} is not in the WebUI's list; "
                            f"put {CN_MODEL_FILES[unit.kind]} in models/ControlNet and refresh")
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
            attention = self.flavour.attention(control.attention, (req.height // 8, req.width // 8),
                                               req.batch_size)
        faults: list[faults_of.Fault] = []
        self.flavour.load_model()  # the model the WebUI may still be loading (A1111 loads it in a thread at start)
        self.check_model_family("Generating")
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
            missing_controlnet_message(req.controlnets[0].kind, False) if req.controlnets else "", faults, generation)
        reports += faults_of.lora_reports([x.name for x in req.loras], getattr(processed, "comments", "") or "")
        if extra_scripts and extra_scripts[0][0] == "adetailer":
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
                     if s.title().lower() == "adetailer"), None)

    def adetailer_models(self) -> list[str]:
        """ADetailer's model list as it holds it (its ``model_mapping``: the YOLO files found in
        ``models/adetailer`` and the mediapipe face models); empty without ADetailer."""
        script = self._adetailer_script()
        if script is None:
            return []
        for attr in vars(type(script)).values():  # the module globals of the script file, as its methods see them
            mapping = getattr(attr, "__globals__", {}).get("model_mapping")
            if isinstance(mapping, dict):
                return list(mapping)
        return []

    def adetailer_detail(self, req: Img2ImgRequest, ad_args: dict[str, Any],
                         control: Optional[RunControl] = None) -> Result:
        """The face detail pass done by the ADetailer extension: an img2img with "skip img2img" on, so
        only ADetailer's inpaint runs. ``ad_args`` is one ADetailer tab dict (``ad_model``, ``ad_prompt``…)."""
        if not self.adetailer_present():
            raise HostError("ADetailer is not installed in this WebUI; use the built-in face detail pass")
        return self._run("img2img", req, control, [("adetailer", [True, True, ad_args])])

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
        from lib_profile.hosts.prompt import extract_networks

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
            raise HostError("No checkpoint is selected in the WebUI; pick an SD1.5 checkpoint at the top of the page")
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

    def check_model_family(self, what: str) -> None:
        """HostError unless the WebUI's model is SD1.x: the loaded one, or (Forge, before it loads) the selected
        checkpoint's file (:mod:`lib_profile.hosts.webui_family`). Profile Studio's LoRAs, ControlNets and
        attention maps are SD1.5's."""
        from lib_profile.hosts.webui_family import selected_family

        sd_model = getattr(self._m("shared"), "sd_model", None)
        family, state = model_family(sd_model), "loaded"
        if family is None:  # Forge loads lazily: the checkpoint picked in its menu may not be loaded yet
            family, state = selected_family(self._m("sd_models"), sd_model), "selected"
        if family is not None:
            raise HostError(f"{what} needs an SD1.5 checkpoint, and the WebUI has an {family} checkpoint {state}; "
                            "pick an SD1.5 checkpoint in the WebUI's checkpoint menu (top of the page) and try again")

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


def control_image_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def detect_flavour():
    """Forge when ``modules_forge`` is importable, else A1111."""
    import importlib.util

    if importlib.util.find_spec("modules_forge") is not None:
        from lib_profile.hosts import forge

        return forge
    from lib_profile.hosts import a1111

    return a1111
