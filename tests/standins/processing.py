"""Stand-ins for the WebUI's processing side (``modules.processing``, ``shared.state``, script runners,
ControlNet, upscalers, queue lock, progress), following the signatures and pitfalls in docs/webui-hosts.md.

They do not draw anything real: txt2img paints a colour from the seed, img2img returns the init image
tinted, inpaint paints only inside the mask. What they check is the *contract*: constructor fields
(unknown kwargs raise TypeError, as the dataclasses do), ``is_api`` before ``scripts``, the Forge
``hr_additional_modules`` trap, per-flavour ControlNet unit values, one ``nextjob()`` per call, and
interrupts honoured between steps.
"""

from __future__ import annotations

import hashlib
import threading
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

SAMPLERS = ["DPM++ 2M", "DPM++ SDE", "Euler a", "Euler", "DDIM"]
A1111_PREPROCESSORS = {"none", "openpose", "openpose_full", "tile_resample"}
FORGE_PREPROCESSORS = {"None", "openpose", "openpose_full", "tile_resample"}
CN_RESIZE_STRINGS = {"Just Resize", "Crop and Resize", "Resize and Fill"}


class State:
    def __init__(self):
        self.job, self.job_no, self.job_count = "", 0, 0
        self.sampling_step, self.sampling_steps = 0, 0
        self.interrupted = self.skipped = False
        self.textinfo = None
        self.log: list[tuple] = []

    def begin(self, job="(unknown)"):
        self.job, self.job_no, self.job_count = job, 0, -1
        self.sampling_step = 0
        self.interrupted = self.skipped = False
        self.log.append(("begin", job))

    def end(self):
        self.log.append(("end", self.job, self.job_no, self.job_count))
        self.job, self.job_count = "", 0

    def nextjob(self):
        self.job_no += 1
        self.sampling_step = 0

    def interrupt(self):
        self.interrupted = True


class FIFOLock:
    """Like ``modules.fifo_lock.FIFOLock``: not re-entrant (a second acquire by the holder would hang
    there; here it raises so a test fails instead of hanging)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.owner = None
        self.acquired = 0

    def __enter__(self):
        if self.owner == threading.get_ident():
            raise RuntimeError("queue_lock acquired twice by one thread: it is not re-entrant")
        self._lock.acquire()
        self.owner = threading.get_ident()
        self.acquired += 1

    def __exit__(self, *exc):
        self.owner = None
        self._lock.release()


class Script:
    setup_for_ui_only = False

    def __init__(self):
        self.args_from = self.args_to = 0
        self.filename = f"{self.title().lower()}.py"
        self.seen: list = []

    def title(self):
        return type(self).__name__

    def setup(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def postprocess_image(self, p, pp, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass


class ScriptSampler(Script):
    """The built-in Sampler script: with ``is_ui`` its setup() overwrites steps/sampler (the 2.4 pitfall)."""

    setup_for_ui_only = True

    def title(self):
        return "Sampler"

    def setup(self, p, steps=20, sampler_name="Euler a", scheduler="Automatic"):
        p.steps, p.sampler_name, p.scheduler = steps, sampler_name, scheduler


class ControlNetScript(Script):
    def __init__(self, flavour: str, models: list[str]):
        super().__init__()
        self.flavour, self.models = flavour, models
        self.units_seen: list[list[dict]] = []

    def title(self):
        return "ControlNet"

    def process(self, p, *units):
        checked = []
        enabled = [u for u in units if u.get("enabled", self.flavour == "forge")]
        # both ControlNets write every enabled unit's infotext first (Forge: Infotext.write_infotext at the top of
        # process; Mikubill: in get_enabled_units), then process the units: a unit that fails leaves its text
        p.extra_generation_params.update({f"ControlNet {i}": f"Module: {u['module']}, Model: {u['model']}"
                                          for i, u in enumerate(enabled)})
        for unit in units:
            assert isinstance(unit, dict), "units are passed as plain dicts"
            if not unit.get("enabled", self.flavour == "forge"):
                continue
            if self.flavour == "a1111":
                if unit["module"] not in A1111_PREPROCESSORS:
                    raise ValueError(f"Mikubill: unknown preprocessor {unit['module']!r}")
                if unit["resize_mode"] not in CN_RESIZE_STRINGS:
                    raise ValueError("Mikubill: resize_mode must be one of the strings")
                stem = unit["model"].split(" [")[0].lower()
                if not any(stem in m.lower() for m in self.models):
                    raise ValueError(f"Mikubill: model {unit['model']!r} not found")
                assert isinstance(unit["image"], (np.ndarray, dict))
            else:
                if unit["module"] not in FORGE_PREPROCESSORS:
                    raise KeyError(unit["module"])  # Forge: exact preprocessor lookup
                if unit["model"] not in self.models:
                    raise KeyError(unit["model"])  # Forge: exact "stem [hash]" lookup
                image = unit["image"]
                if isinstance(image, str):  # base64, as from the API (ControlNetUnit.from_dict decodes it)
                    image = np.zeros((8, 8, 3), np.uint8)
                # Forge 2 (dfdcbab6) get_input_data: `elif (unit_image < 5).all() and ...` on the unit's image
                _ = (image < 5).all()  # TypeError: '<' not supported between instances of 'dict' and 'int'
                assert isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            checked.append(unit)
        self.units_seen.append(checked)

    def postprocess(self, p, processed, *units):
        if any(u.get("save_detected_map", True) for u in units):  # Mikubill appends detected maps
            processed.images.append(Image.new("RGB", (p.width, p.height), (255, 0, 255)))


# ADetailer's model list, as its script module holds it (`model_mapping`, read from its module globals)
model_mapping: dict[str, str] = {}


class ADetailerScript(Script):
    """ADetailer 25.3.0's contract: `process` writes its parameters; `postprocess_image` with "skip img2img" takes
    the init image, asks for its model (a missing one raises ValueError, re-raised wrapped in a console panel by
    its `rich_traceback`) and repaints what it detects (here: a box in the middle when `finds_face`)."""

    finds_face = True
    error: str = ""  # a test may make the detection fail, e.g. a model file that vanished after it was listed

    def title(self):
        return "ADetailer"

    def process(self, p, *args):
        self.seen.append(args)
        p.extra_generation_params.update({"ADetailer model": args[2]["ad_model"], "ADetailer version": "25.3.0"})

    def postprocess_image(self, p, pp, *args):
        try:
            model = args[2]["ad_model"]
            if model not in model_mapping:
                raise ValueError(f"[-] ADetailer: Model {model!r} not found. Available models: {list(model_mapping)}")
            if self.error:
                raise FileNotFoundError(self.error)
        except Exception as e:
            raise type(e)("\n+---- console panel ----+\n| System info ... |\n+------+") from None
        image = p.init_images[0].convert("RGB") if args[1] else pp.image
        if self.finds_face:
            image = image.copy()
            w, h = image.size
            image.paste((200, 150, 120), (w // 3, h // 4, 2 * w // 3, h // 2))
        pp.image = image


exception_records: list = []  # modules.errors.exception_records


def report(message: str, *, exc_info: bool = False) -> None:
    """modules.errors.report: records the exception being handled and prints the message."""
    import sys

    _, e, _tb = sys.exc_info()
    if e is not None:
        exception_records.append({"exception": str(e), "traceback": []})
        del exception_records[:-5]  # the real one keeps 5
    print("***", message, file=sys.stderr)


class ScriptRunner:
    """Like A1111's: every hook of every always-on script runs inside try/except, and an exception is only
    reported to the console (``errors.report``); the generation goes on."""

    def __init__(self, scripts: list[Script]):
        self.scripts = list(scripts)
        self.alwayson_scripts = list(scripts)
        self.selectable_scripts: list = []
        self.callback_map: dict = {}
        start = 0
        for s in self.scripts:
            n = 3 if isinstance(s, (ScriptSampler, ControlNetScript)) else 0
            s.args_from, s.args_to = start, start + n
            start += n

    def setup_scrips(self, p, *, is_ui=True):
        for s in self.alwayson_scripts:
            if not is_ui and s.setup_for_ui_only:
                continue
            s.setup(p, *p.script_args[s.args_from:s.args_to])

    def _each(self, hook, p, *extra):  # the real runner calls only scripts whose class overrides the hook
        for s in self.alwayson_scripts:
            if getattr(type(s), hook, None) is None or getattr(type(s), hook) is getattr(Script, hook, None):
                continue
            try:
                getattr(s, hook)(p, *extra, *p.script_args[s.args_from:s.args_to])
            except Exception:
                report(f"Error running {hook}: {s.filename}", exc_info=True)

    def process(self, p):
        self._each("process", p)

    def process_before_every_sampling(self, p):
        self._each("process_before_every_sampling", p)

    def postprocess_image(self, p, pp):
        self._each("postprocess_image", p, pp)

    def postprocess(self, p, processed):
        self._each("postprocess", p, processed)


@dataclass(repr=False)
class StableDiffusionProcessing:
    sd_model: Any = None
    outpath_samples: str = None
    outpath_grids: str = None
    prompt: Any = ""
    styles: list = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    seed_enable_extras: bool = True
    sampler_name: str = None
    scheduler: str = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool = None
    tiling: bool = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    extra_generation_params: dict = None
    negative_prompt: Any = ""
    denoising_strength: float = None
    override_settings: dict = None
    override_settings_restore_afterwards: bool = True
    disable_extra_networks: bool = False
    is_api: bool = field(default=False, init=False)
    scripts_value: Any = field(default=None, init=False)
    script_args_value: list = field(default=None, init=False)
    scripts_setup_complete: bool = field(default=False, init=False)
    closed: bool = field(default=False, init=False)

    def __post_init__(self):
        self.extra_generation_params = self.extra_generation_params or {}

    @property
    def scripts(self):
        return self.scripts_value

    @scripts.setter
    def scripts(self, value):
        self.scripts_value = value
        if self.scripts_value and self.script_args_value and not self.scripts_setup_complete:
            self.setup_scripts()

    @property
    def script_args(self):
        return self.script_args_value

    @script_args.setter
    def script_args(self, value):
        self.script_args_value = value
        if self.scripts_value and self.script_args_value and not self.scripts_setup_complete:
            self.setup_scripts()

    def setup_scripts(self):
        self.scripts_setup_complete = True
        self.scripts.setup_scrips(self, is_ui=not self.is_api)

    def close(self):
        self.closed = True


@dataclass(repr=False)
class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    enable_hr: bool = False
    denoising_strength: float = 0.75
    hr_scale: float = 2.0
    hr_upscaler: str = None
    hr_second_pass_steps: int = 0
    hr_sampler_name: str = None
    hr_scheduler: str = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    force_task_id: str = None


@dataclass(repr=False)
class ForgeTxt2Img(StableDiffusionProcessingTxt2Img):
    hr_additional_modules: list = None
    hr_cfg: float = 1.0
    hr_distilled_cfg: float = 3.5


@dataclass(repr=False)
class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    init_images: list = None
    resize_mode: int = 0
    denoising_strength: float = 0.75
    image_cfg_scale: float = None
    mask: Any = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float = None
    latent_mask: Any = None
    force_task_id: str = None
    image_mask: Any = field(default=None, init=False)

    def __post_init__(self):
        super().__post_init__()
        self.image_mask = self.mask
        self.mask = None


@dataclass
class Processed:
    images: list
    all_seeds: list
    infotexts: list
    sampler_name: str
    index_of_first_image: int = 0
    sd_model_name: str = "standin-model"
    sd_model_hash: str = "0123abcd"
    comments: str = ""


def _missing_loras(prompt: str, shared) -> list[str]:
    """The LoRA tags whose file is not in the Lora folder (the built-in Lora extension's "Lora not found")."""
    import os
    import re
    from pathlib import Path

    folder = Path(getattr(shared.cmd_opts, "lora_dir", None) or os.path.join(shared.cmd_opts.data_dir, "models", "Lora"))
    names = {f.stem for f in folder.rglob("*") if f.suffix in (".safetensors", ".pt", ".ckpt")} if folder.is_dir() else set()
    prompts = prompt if isinstance(prompt, list) else [prompt]
    wanted = {m for text in prompts for m in re.findall(r"<lora:([^:>]+)", text)}
    return sorted(wanted - names)


def _colour(seed: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(seed)
    return tuple(int(x) for x in rng.integers(0, 256, 3))


def make_processing(flavour: str, state: State, shared) -> types.ModuleType:
    module = types.ModuleType("modules.processing")
    module.calls = []
    module.on_step = None  # a test may set a callback(p, step) to interrupt mid-run
    module.StableDiffusionProcessing = StableDiffusionProcessing
    module.StableDiffusionProcessingTxt2Img = ForgeTxt2Img if flavour == "forge" else StableDiffusionProcessingTxt2Img
    module.StableDiffusionProcessingImg2Img = StableDiffusionProcessingImg2Img
    module.Processed = Processed

    def process_images(p):
        module.calls.append(p)
        # A1111 1.10.1: overrides are applied to opts, and only keys already in opts.data are restored
        stored = {k: shared.opts.data[k] for k in (p.override_settings or {}) if k in shared.opts.data}
        shared.opts.data.update(p.override_settings or {})
        try:
            return _process(p)
        finally:
            if p.override_settings_restore_afterwards:
                shared.opts.data.update(stored)

    def _process(p):
        if state.job_count == -1:
            state.job_count = p.n_iter
        if flavour == "forge" and getattr(p, "enable_hr", False):
            _ = "Use same choices" not in p.hr_additional_modules  # TypeError on None, as in Forge's sample()
        if p.sampler_name not in SAMPLERS:
            raise ValueError(f"unknown sampler {p.sampler_name}")
        if p.scripts is not None:
            p.scripts.process(p)
            if flavour == "forge":
                p.scripts.process_before_every_sampling(p)
        seeds = list(p.seed) if isinstance(p.seed, list) else [p.seed + i for i in range(p.batch_size)]
        images = []
        state.sampling_steps = p.steps
        for step in range(p.steps):
            if state.interrupted:
                break
            state.sampling_step = step + 1
            if module.on_step:
                module.on_step(p, step + 1)
        if not (state.interrupted and state.sampling_step == 0):
            for s in seeds:
                if isinstance(p, StableDiffusionProcessingImg2Img):
                    base = p.init_images[0].convert("RGB")
                    paint = Image.new("RGB", base.size, _colour(s))
                    if p.image_mask is not None:
                        out = Image.composite(paint, base, p.image_mask.convert("L"))
                    else:
                        out = Image.blend(base.resize((p.width, p.height)), paint.resize((p.width, p.height)),
                                          p.denoising_strength * 0.5)
                else:
                    size = (int(p.width * p.hr_scale), int(p.height * p.hr_scale)) if p.enable_hr else (p.width, p.height)
                    out = Image.new("RGB", size, _colour(s))  # hires fix: the image at the upscaled size
                images.append(out)
        if p.scripts is not None:
            for i, image in enumerate(images):
                pp = types.SimpleNamespace(image=image)
                p.scripts.postprocess_image(p, pp)
                images[i] = pp.image
        missing = _missing_loras(p.prompt, shared)
        params = ", ".join(f"{k}: {v}" for k, v in p.extra_generation_params.items())
        processed = Processed(images=images, all_seeds=seeds,
                              infotexts=[f"{p.prompt}\nSeed: {s}" + (f", {params}" if params else "") for s in seeds],
                              sampler_name=p.sampler_name,
                              comments=f"Lora not found: {', '.join(missing)}\n" if missing else "")
        if p.scripts is not None:
            p.scripts.postprocess(p, processed)
        state.nextjob()
        return processed

    module.process_images = process_images
    return module


class Upscaler:
    def upscale(self, img, scale, selected_model):
        return img.resize((int(img.width * scale) // 8 * 8, int(img.height * scale) // 8 * 8), Image.LANCZOS)


@dataclass
class UpscalerData:
    name: str
    data_path: str
    scaler: Upscaler


def model_hash(filename) -> str:
    """A1111's short hash: sha256 of 64 KiB at offset 1 MiB, first 8 hex digits."""
    with open(filename, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


class Options(types.SimpleNamespace):
    def save(self, filename):
        """modules.options.Options.save: the whole of ``self.data`` as JSON."""
        import json

        with open(filename, "w", encoding="utf8") as file:
            json.dump(self.data, file, indent=4, ensure_ascii=False)


def make_runtime(flavour: str, shared, cn_models: list[str] | None, adetailer: bool) -> dict[str, types.ModuleType]:
    """``modules.processing`` and friends; ``cn_models=None`` means no ControlNet extension."""
    state = State()
    shared.state = state
    class OptionInfo:
        def __init__(self, default=None, label="", component=None, component_args=None, section=None, **kw):
            self.default, self.label, self.component, self.section = default, label, component, section

    shared.OptionInfo = OptionInfo
    shared.opts = Options(outdir_samples="", outdir_txt2img_samples="out/txt2img",
                          outdir_img2img_samples="out/img2img", outdir_grids="",
                          outdir_txt2img_grids="out/txt2img-grids",
                          outdir_img2img_grids="out/img2img-grids", data={}, added={})
    shared.opts.add_option = lambda key, info: shared.opts.added.__setitem__(key, info)
    shared.sd_upscalers = [UpscalerData(n, None, Upscaler()) for n in ("None", "Lanczos", "R-ESRGAN 4x+")]
    shared.latent_upscale_modes = {"Latent": {"mode": "bilinear", "antialias": False},
                                   "Latent (nearest)": {"mode": "nearest", "antialias": False}}

    def runner():
        scripts = [ScriptSampler()]
        if cn_models is not None:
            scripts.append(ControlNetScript(flavour, cn_models))
        if adetailer:
            scripts.append(ADetailerScript())
        return ScriptRunner(scripts)

    progress = types.ModuleType("modules.progress")
    progress.log = []
    progress.current_task, progress.pending_tasks, progress.finished_tasks = None, {}, []

    def add_task_to_queue(id_task):
        progress.log.append(("queued", id_task))
        progress.pending_tasks[id_task] = len(progress.log)

    def start_task(id_task):
        progress.log.append(("start", id_task))
        progress.current_task = id_task
        progress.pending_tasks.pop(id_task, None)

    def finish_task(id_task):
        progress.log.append(("finish", id_task))
        if progress.current_task == id_task:
            progress.current_task = None
        progress.finished_tasks = [*progress.finished_tasks, id_task][-16:]

    def progressapi(id_task):
        """``modules/progress.py: progressapi`` (what ``POST /internal/progress`` answers), its computation
        as in A1111 1.10 and Forge: job_no/job_count plus the sampling step's share of one job, capped at 1."""
        active = id_task == progress.current_task
        out = {"active": active, "queued": id_task in progress.pending_tasks,
               "completed": id_task in progress.finished_tasks}
        if not active:
            return {**out, "progress": None, "textinfo": "Waiting..."}
        value = 0
        job_count, job_no = state.job_count, state.job_no
        sampling_steps, sampling_step = state.sampling_steps, state.sampling_step
        if job_count > 0:
            value += job_no / job_count
        if sampling_steps > 0 and job_count > 0:
            value += 1 / job_count * sampling_step / sampling_steps
        return {**out, "progress": min(value, 1), "textinfo": state.textinfo}

    progress.add_task_to_queue, progress.start_task, progress.finish_task = add_task_to_queue, start_task, finish_task
    progress.progressapi = progressapi
    call_queue = types.ModuleType("modules.call_queue")
    call_queue.queue_lock = FIFOLock()

    def wrap_gradio_call(func, extra_outputs=None, add_stats=False):
        """As the WebUI's: after the call (any UI action so wrapped), outside the queue lock, the job fields are
        reset, whatever job holds the lock meanwhile."""
        def f(*args, **kwargs):
            try:
                return func(*args, **kwargs)
            finally:
                state.skipped = state.interrupted = False
                state.job_count, state.job = 0, ""
        return f

    call_queue.wrap_gradio_call = wrap_gradio_call
    samplers = types.ModuleType("modules.sd_samplers")
    samplers.visible_sampler_names = lambda: list(SAMPLERS)
    sd_models = types.ModuleType("modules.sd_models")
    sd_models.model_hash = model_hash
    if flavour == "forge":  # loads the selected checkpoint unless it is loaded (here: nothing to load)
        sd_models.forge_model_reload = lambda: (getattr(shared, "sd_model", None), False)
    errors = types.ModuleType("modules.errors")
    errors.exception_records = exception_records
    errors.report = report
    exception_records.clear()
    model_mapping.clear()
    model_mapping.update({"face_yolov8n.pt": "models/adetailer/face_yolov8n.pt", "mediapipe_face_full": None,
                          "mediapipe_face_short": None, "mediapipe_face_mesh": None})
    return {
        "modules.processing": make_processing(flavour, state, shared),
        "modules.progress": progress,
        "modules.call_queue": call_queue,
        "modules.sd_samplers": samplers,
        "modules.sd_models": sd_models,
        "modules.errors": errors,
        "_runners": (runner(), runner()),
    }
