"""``python -m lib_profile``: Profile Studio from the command line (the diffusers host, no WebUI).

Exit codes: 0 done, 2 a problem the user can fix (the message says how), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _lora_arg(text: str):
    """``FILE[:WEIGHT]`` -> LoraRef (a path whose last ``:`` part is no number is all path)."""
    from lib_profile.hosts.base import LoraRef

    head, sep, tail = text.rpartition(":")
    try:
        if sep and head:
            return LoraRef(path=head, weight=float(tail))
    except ValueError:
        pass
    return LoraRef(path=text, weight=1.0)


# explain and edit of a prompt: a 2:3 portrait by default
PORTRAIT_DEFAULTS = {"negative_prompt": "", "width": 512, "height": 768, "steps": 25, "cfg_scale": 6.5,
                     "sampler": "DPM++ 2M", "scheduler": "Karras", "clip_skip": 1}


def _lora_dir_arg(p) -> None:
    p.add_argument("--lora-dir", action="append", default=[], metavar="FOLDER",
                   help="where <lora:NAME:WEIGHT> tags in a prompt are looked up, before the data folder's loras/ "
                   "(repeatable)")


def _lora_dirs(args) -> list[str]:
    """The ``--lora-dir`` folders, each checked to be one."""
    from lib_profile.hosts.base import HostError

    for folder in args.lora_dir:
        if not Path(folder).expanduser().is_dir():
            raise HostError(f"--lora-dir {folder}: no such folder")
    return list(args.lora_dir)


def _print_lora_notes(params: dict) -> None:
    for note in params.get("lora_notes") or []:
        print(f"note: {note}", file=sys.stderr)


def _portrait_args(p) -> None:
    """The generation settings explain and edit share: the options of :class:`SourceSettings` (defaults:
    ``PORTRAIT_DEFAULTS``), seed and LoRAs."""
    from lib_profile.studio.settings import SourceSettings, add_arguments

    add_arguments(p, SourceSettings)
    p.add_argument("--seed", type=int, default=-1)
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:WEIGHT]")
    _lora_dir_arg(p)


def _portrait_request(args):
    from lib_profile.hosts.base import Txt2ImgRequest
    from lib_profile.studio.settings import SourceSettings, from_arguments

    settings = {**PORTRAIT_DEFAULTS, **from_arguments(args, SourceSettings)}
    req = Txt2ImgRequest(prompt=args.prompt, seed=args.seed, loras=[_lora_arg(x) for x in args.lora], **settings)
    req.validate()
    return req


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib_profile", description="Profile Studio without a WebUI.")
    parser.add_argument("--data-dir", help="where Profile Studio keeps its data and caches "
                        "(default: $PROFILE_STUDIO_DIR or ~/.local/share/profile-studio)")
    sub = parser.add_subparsers(dest="command", required=True)
    from lib_profile.studio.settings import PlanSettings
    from lib_profile.studio.settings import add_arguments as add_settings_arguments

    p = sub.add_parser("doctor", help="report versions, device, and which optional models are missing and where they go")
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser("intake", help="check selfies photo by photo and make the training set")
    p.add_argument("photos", help="folder with about 10 photos of one person (5 to 30)")
    p.add_argument("--out", required=True, help="intake folder to write: report.json, train/, contact_sheet.png")
    p.add_argument("--token", default="ohwx", help="the identity token used in captions (default: ohwx)")
    p.add_argument("--class-word", default="person", choices=["woman", "man", "person"])
    p.add_argument("--crop-ratio", type=float, default=3.0, help="crop side as a multiple of the face box (default 3)")
    p.add_argument("--crop-size", type=int, default=512)
    p.add_argument("--clean-background", action="store_true", help="replace the background of crops with plain grey")
    p.add_argument("--min-photos", type=int, default=5, help="accepted photos needed to train (default 5)")
    p.add_argument("--threshold", action="append", default=[], metavar="NAME=VALUE",
                   help="change a check's threshold, e.g. min_sharpness=20 (repeatable; see report.json)")
    p.add_argument("--detector", default="mediapipe", choices=["mediapipe", "yolo"],
                   help="face detector: mediapipe (bundled, default) or yolo (needs face_yolov8n.pt, see doctor)")
    p.add_argument("--detector-model", help="path of the YOLO face model (default: where doctor says it goes)")
    p.add_argument("--embedder", default="dlib", choices=["dlib", "arcface"],
                   help="identity embedder: dlib (offline, default) or arcface (needs w600k_r50.onnx, see doctor)")
    p.add_argument("--embedder-model", help="path of the ArcFace ONNX model")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")

    p = sub.add_parser("train", help="train the person's face LoRA from an intake folder (own process)")
    p.add_argument("intake", help="the folder `intake` wrote (report.json, train/, identity.json)")
    p.add_argument("--checkpoint", required=True, help="the SD1.5 checkpoint file to train on, or 'tiny'")
    p.add_argument("--name", required=True, help="the LoRA's name (a new file name is made for every run)")
    p.add_argument("--out", required=True, help="training folder: checkpoints, validation, state, report, LoRA")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--resume", action="store_true", help="continue a cancelled run in --out")
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--clip-skip", type=int, default=2)
    p.add_argument("--feed-forward", action="store_true", help="also train the UNet's feed-forward layers")
    p.add_argument("--train-text-encoder", action="store_true", help="also train the text encoder's attention")
    p.add_argument("--no-identity-in-lora", dest="identity_in_lora", action="store_false",
                   help="leave the person's face embedding out of the LoRA file's metadata (it stays in the "
                        ".identity.json beside it, for identity scores)")
    p.add_argument("--gradient-checkpointing", action="store_true", default=None,
                   help="trade speed for memory (default: on when the GPU has under 12 GB free)")
    p.add_argument("--optimizer", default="adamw", choices=["adamw", "adamw8bit"])
    p.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_false",
                   help="run each GPU step eagerly instead of replaying it as one CUDA graph (slower; for debugging)")
    p.add_argument("--validate-every", type=int, default=100)
    p.add_argument("--validation-images", type=int, default=4)
    p.add_argument("--validation-steps", type=int, default=20)
    p.add_argument("--validation-size", type=int, default=None)
    p.add_argument("--select", default="top3", help="best, last or topK (average of the K best checkpoints)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--events", help="append JSON-lines progress events to this file (default: stdout)")
    p.add_argument("--cancel-file", help="stop (resumably) when this file appears (default: OUT/CANCEL)")
    p.add_argument("--parent-pid", type=int, default=None,
                   help="stop (resumably) when this process, the one that started the trainer, dies")

    p = sub.add_parser("generate", help="make studio portraits: pose, tone, face detail, refine, upscale")
    p.add_argument("--checkpoint", required=True, help="an SD1.5 checkpoint file, or 'tiny'")
    p.add_argument("--lora", help="the person's LoRA file (from `train`)")
    p.add_argument("--lora-weight", type=float, default=0.9)
    _lora_dir_arg(p)
    p.add_argument("--pose", help="a pose template name (see `poses`), an OpenPose JSON file, or a reference photo")
    p.add_argument("--tone", default="warm", help="warm, cool, neutral or one of your presets (see `tones`)")
    p.add_argument("--count", type=int, default=4)
    p.add_argument("--seed", type=int, default=-1)
    p.add_argument("--prompt", help="what to make (default: a studio portrait of the LoRA's person)")
    p.add_argument("--controlnet-pose", help="OpenPose ControlNet model file ('tiny' with --checkpoint tiny)")
    p.add_argument("--controlnet-tile", help="tile ControlNet model file for the upscale ('tiny' with the tiny model)")
    add_settings_arguments(p, PlanSettings)  # --width, --height, --steps, ... (unset: the plan's and tone's)
    for stage in ("detail", "refine", "detail2", "upscale", "grade"):
        p.add_argument(f"--no-{stage}", action="store_true", help=f"switch the {stage} stage off")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", required=True)

    p = sub.add_parser("explain", help="which pixels each prompt word drives (DAAM heat maps) for one image")
    p.add_argument("--checkpoint", required=True, help="an SD1.5 checkpoint file, or 'tiny'")
    p.add_argument("--prompt", required=True)
    p.add_argument("--word", action="append", required=True, help="a word or phrase of the prompt (repeatable)")
    _portrait_args(p)
    p.add_argument("--layers", help="only cross-attention layers FIRST-LAST (0-based, in UNet order)")
    p.add_argument("--step-range", help="only sampling steps FIRST-LAST (0-based)")
    p.add_argument("--hires-pass", action="store_true", help="map the hires fix pass (default: the first pass)")
    p.add_argument("--threshold", type=float, help="also write a mask per word: map > THRESHOLD (0..1)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", required=True)

    p = sub.add_parser("edit", help="edit an image by editing its prompt (Prompt-to-Prompt); writes source and edit")
    p.add_argument("--checkpoint", required=True, help="an SD1.5 checkpoint file, or 'tiny'")
    p.add_argument("--prompt", required=True, help="the source prompt")
    p.add_argument("--target", default="", help="the edited prompt (swap, refine)")
    p.add_argument("--mode", default="swap", choices=["swap", "refine", "reweight"])
    p.add_argument("--weight", action="append", default=[], metavar="WORD=C", help="scale a word's attention by C (-2..2)")
    p.add_argument("--blend", action="append", default=[], metavar="WORD", help="change only where WORD attends")
    p.add_argument("--cross-steps", type=float, default=0.8, help="tau: fraction of steps with the source's cross-attention")
    p.add_argument("--self-steps", type=float, default=0.4, help="fraction of steps with the source's self-attention")
    _portrait_args(p)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", required=True)

    p = sub.add_parser("serve", help="serve the API and the tab without a WebUI (diffusers host)")
    p.add_argument("--checkpoint", required=True, help="an SD1.5 checkpoint file, or 'tiny'")
    p.add_argument("--port", type=int, default=7870)
    p.add_argument("--listen", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--api-auth", help="user:password[,user2:password2] required on every route and the tab")
    p.add_argument("--allow-open-api", action="store_true",
                   help="serve without --api-auth on an address other machines reach (refused otherwise)")
    p.add_argument("--controlnet-pose", help="OpenPose ControlNet model file ('tiny' with --checkpoint tiny)")
    p.add_argument("--controlnet-tile", help="tile ControlNet model file ('tiny' with --checkpoint tiny)")
    _lora_dir_arg(p)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")

    p = sub.add_parser("tones", help="list the colour-look presets (shipped and your own)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("poses", help="list the pose template names, one per line")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("download", help="download an optional model file into its folder (resumable, checksummed)")
    p.add_argument("model", help="one of the keys `doctor` lists (e.g. yolo_face, arcface, controlnet_openpose)")

    p = sub.add_parser("txt2img", help="generate images through the diffusers host")
    p.add_argument("--checkpoint", required=True, help="an SD1.5 .safetensors/.ckpt file, or 'tiny' (a built-in "
                   "random test model: it draws noise)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg-scale", type=float, default=7.0)
    p.add_argument("--sampler", default="Euler a", help="a WebUI sampler name, e.g. 'DPM++ 2M' or 'DPM++ 2M Karras'")
    p.add_argument("--scheduler", default="Automatic", help="schedule type: Automatic, Karras, Exponential, ...")
    p.add_argument("--seed", type=int, default=-1)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--clip-skip", type=int, default=1)
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:WEIGHT]", help="a kohya LoRA file (repeatable)")
    _lora_dir_arg(p)
    p.add_argument("--controlnet", metavar="MODEL", help="a ControlNet model file ('tiny' with --checkpoint tiny)")
    p.add_argument("--control-image", help="the control map image (e.g. an OpenPose drawing)")
    p.add_argument("--control-weight", type=float, default=1.0)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", required=True, help="output folder (PNG files with WebUI infotext)")
    return parser


def cmd_doctor(args) -> int:
    from lib_profile import doctor

    rep = doctor.report(args.data_dir)
    print(json.dumps(rep, indent=2) if args.json else doctor.format_text(rep))
    return 0


def cmd_txt2img(args) -> int:
    from PIL import Image

    from lib_profile.hosts.base import ControlUnit, HostError, Txt2ImgRequest
    from lib_profile.hosts.diffusers.host import DiffusersHost, tiny_controlnet
    from lib_profile.infotext import save_png

    units = []
    if args.controlnet or args.control_image:
        if not (args.controlnet and args.control_image):
            raise HostError("--controlnet and --control-image go together")
        if not Path(args.control_image).is_file():
            raise HostError(f"control image not found: {args.control_image}")
        model = str(tiny_controlnet(args.data_dir)) if args.controlnet == "tiny" else args.controlnet
        units.append(ControlUnit("pose", Image.open(args.control_image).convert("RGB"), model, args.control_weight))
    req = Txt2ImgRequest(prompt=args.prompt, negative_prompt=args.negative_prompt, width=args.width,
                         height=args.height, steps=args.steps, cfg_scale=args.cfg_scale, sampler=args.sampler,
                         scheduler=args.scheduler, seed=args.seed, batch_size=args.batch_size,
                         clip_skip=args.clip_skip, loras=[_lora_arg(x) for x in args.lora], controlnets=units)
    req.validate()
    out = Path(args.out)
    host = DiffusersHost(args.checkpoint, device=args.device, data_dir=args.data_dir, lora_dirs=_lora_dirs(args))
    result = host.txt2img(req)
    _print_lora_notes(result.params)
    out.mkdir(parents=True, exist_ok=True)
    for image, seed, text in zip(result.images, result.seeds, result.infotexts):
        path = save_png(image, out / f"{seed}-{host.model.name}.png", text)
        print(path)
    return 0


def lora_name(name: str) -> str:
    """``--name`` as a LoRA file name: an ASCII name as given (the trainer checks it); a name in another script
    (``李雷``, ``Анна``) as its slug (``li-lei-3a47328a``, see :func:`~lib_profile.store.identities.slug_for`),
    said on stderr. A name with ``/``, ``..`` or control characters is a HostError (exit 2)."""
    if name.isascii():
        return name
    from lib_profile.store.identities import slug_for

    slug = slug_for(name)
    print(f"LoRA name: {slug} (from {name!r})", file=sys.stderr)
    return slug


def cmd_train(args) -> int:
    from lib_profile.train.parent import watch_parent

    watch_parent(args.parent_pid)  # first, before the slow imports: a trainer never outlives its starter
    from lib_profile.train.runlock import LOCKED, RunLocked
    from lib_profile.train.trainer import CANCELLED, Events, TrainConfig, Trainer

    cfg = TrainConfig(name=lora_name(args.name), steps=args.steps, rank=args.rank, alpha=args.alpha,
                      learning_rate=args.learning_rate, batch_size=args.batch_size, resolution=args.resolution,
                      seed=args.seed, clip_skip=args.clip_skip, feed_forward=args.feed_forward,
                      train_text_encoder=args.train_text_encoder, gradient_checkpointing=args.gradient_checkpointing,
                      optimizer=args.optimizer, cuda_graph=args.cuda_graph, validate_every=args.validate_every,
                      validation_images=args.validation_images, validation_steps=args.validation_steps,
                      validation_size=args.validation_size, select=args.select, log_every=args.log_every,
                      save_every=args.save_every, device=args.device, identity_in_lora=args.identity_in_lora)
    events = Events(args.events or sys.stdout)
    try:
        trainer = Trainer(args.intake, args.checkpoint, args.out, cfg, events, args.data_dir)
        result = trainer.run(resume=args.resume, cancel_file=Path(args.cancel_file) if args.cancel_file else None)
    except RunLocked as exc:  # the events file is the other trainer's: nothing is written to it
        print(f"error: {exc}", file=sys.stderr)
        return LOCKED
    except Exception as exc:
        events("phase", phase="error", message=str(exc))
        raise
    finally:
        events.close()
    if result.get("cancelled"):
        print(f"cancelled at step {result['step']}; continue with --resume", file=sys.stderr)
        return CANCELLED
    print(result["file"], file=sys.stderr)
    return 0


def cmd_generate(args) -> int:
    from lib_profile.hosts.diffusers.host import DiffusersHost, tiny_controlnet
    from lib_profile.studio.plan import build_plan, default_prompt
    from lib_profile.studio.run import run_plan
    from lib_profile.studio.settings import PlanSettings, check_sampler, from_arguments

    settings = from_arguments(args, PlanSettings)  # checked before any model loads
    out = Path(args.out)
    pose = args.pose
    if pose and Path(pose).is_file() and Path(pose).suffix.lower() != ".json":
        from lib_profile.studio.pose import pose_from_photo_file

        out.mkdir(parents=True, exist_ok=True)
        pose = str(pose_from_photo_file(pose, out / "pose-from-photo.json"))
    prompt = args.prompt or default_prompt(args.lora)
    cn = lambda v: str(tiny_controlnet(args.data_dir)) if v == "tiny" else v  # noqa: E731
    switches = {s: not getattr(args, f"no_{s}") for s in ("detail", "refine", "detail2", "upscale", "grade")}
    plan = build_plan(prompt, args.lora, pose, args.tone, args.count, args.seed, switches, args.lora_weight,
                      cn(args.controlnet_pose), cn(args.controlnet_tile), args.data_dir,
                      **settings)
    host = DiffusersHost(args.checkpoint, device=args.device, data_dir=args.data_dir, lora_dirs=_lora_dirs(args))
    check_sampler(host, settings)
    result = run_plan(plan, host, out, on_stage=lambda n, i, kind: print(f"[{n + 1}/{plan.count}] {kind}",
                                                                         file=sys.stderr))
    for note in result["notes"]:
        print(f"note: {note}", file=sys.stderr)
    for item in result["images"]:
        print(out / item["file"])
    return 0


def cmd_tones(args) -> int:
    from lib_profile.studio.tone import list_tones

    tones = list_tones(args.data_dir)
    if args.json:
        print(json.dumps([t.to_dict() for t in tones], indent=1))
    else:
        for t in tones:
            print(f"{t.name:10s} {t.title}: {t.description} (sampler {t.sampler}, {t.scheduler}; "
                  f"grade strength {t.strength})")
    return 0


def cmd_poses(args) -> int:
    from lib_profile.studio.pose import list_poses, pose_to_json

    poses = list_poses()
    if args.json:
        print(json.dumps([pose_to_json(p) for p in poses], indent=1))
    else:
        for p in poses:
            print(p.name)
    return 0


def cmd_download(args) -> int:
    from lib_profile import model_files
    from lib_profile.hosts.base import HostError

    try:
        model_files.find(args.model)
    except KeyError:
        keys = ", ".join(m.key for m in model_files.MODEL_FILES)
        raise HostError(f"Unknown model {args.model!r}; choose one of: {keys}") from None

    def show(done, total):
        print(f"\r{done / 2**20:.1f} MiB" + (f" of {total / 2**20:.1f} MiB" if total else ""), end="", file=sys.stderr)

    path = model_files.fetch(args.model, args.data_dir, progress=show)
    print(f"\n{path}")
    return 0


def cmd_intake(args) -> int:
    from lib_profile.hosts.base import HostError
    from lib_profile.photos.checks import Thresholds
    from lib_profile.photos.intake import IntakeOptions, run_intake

    values: dict = {"min_photos": args.min_photos}
    for item in args.threshold:
        name, sep, value = item.partition("=")
        if not sep:
            raise HostError(f"--threshold takes NAME=VALUE, not {item!r}")
        try:
            values[name.strip()] = float(value) if value.strip().lower() != "none" else None
        except ValueError:
            raise HostError(f"--threshold {name}: {value!r} is not a number") from None
    opts = IntakeOptions(token=args.token, class_word=args.class_word, crop_ratio=args.crop_ratio,
                         crop_size=args.crop_size, clean_background=args.clean_background,
                         thresholds=Thresholds.from_dict(values), detector=args.detector,
                         detector_model=args.detector_model, embedder=args.embedder,
                         embedder_model=args.embedder_model)
    report = run_intake(args.photos, args.out, opts,
                        progress=lambda i, n, name: print(f"[{i + 1}/{n}] {name}", file=sys.stderr))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for photo in report["photos"]:
            why = "; ".join(f"{r['code']}: {r['message']}" for r in photo["reasons"])
            print(f"{photo['status']:9s} {photo['file']}" + (f"  ({why})" if why else ""))
        print(f"report: {Path(args.out) / 'report.json'}  contact sheet: {Path(args.out) / 'contact_sheet.png'}")
    print(report["next_step"], file=sys.stdout if report["ready"] else sys.stderr)
    return 0 if report["ready"] else 2


def _range(text):
    if not text:
        return None
    from lib_profile.hosts.base import HostError

    try:
        first, last = (int(x) for x in text.split("-"))
    except ValueError:
        raise HostError(f"a range is FIRST-LAST, e.g. 0-9, not {text!r}") from None
    if not 0 <= first <= last:
        raise HostError(f"a range needs 0 <= FIRST <= LAST, not {text!r}")
    return first, last


def cmd_explain(args) -> int:
    from lib_profile.attention.explain import explain, save
    from lib_profile.hosts.diffusers.host import DiffusersHost

    req = _portrait_request(args)
    host = DiffusersHost(args.checkpoint, device=args.device, data_dir=args.data_dir, lora_dirs=_lora_dirs(args))
    report = save(explain(host, req, args.word, _range(args.layers), _range(args.step_range),
                          hires_pass=args.hires_pass), args.out, args.threshold)
    for word, files in report["words"].items():
        print(f"{word}: {Path(args.out) / files['overlay']}")
    _print_lora_notes({"lora_notes": report["notes"]})
    return 0


def cmd_edit(args) -> int:
    from lib_profile.attention.p2p import Edit, edit_control, edit_request
    from lib_profile.hosts.base import HostError
    from lib_profile.hosts.diffusers.host import DiffusersHost
    from lib_profile.infotext import save_png

    weights = {}
    for item in args.weight:
        word, _, value = item.rpartition("=")
        try:
            weights[word] = float(value)
        except ValueError:
            raise HostError(f"--weight is WORD=C, e.g. smiling=1.5, not {item!r}") from None
    edit = Edit(source=args.prompt, target=args.target, mode=args.mode, cross_steps=args.cross_steps,
                self_steps=args.self_steps, weights=weights, blend_words=args.blend)
    req = _portrait_request(args)
    edit.validate()
    host = DiffusersHost(args.checkpoint, device=args.device, data_dir=args.data_dir, lora_dirs=_lora_dirs(args))
    control = edit_control(host, edit, req.negative_prompt)
    res = host.txt2img(edit_request(req, edit), control)
    _print_lora_notes(res.params)
    print(f"Prompt-to-Prompt: {edit.mode}, {control.attention.summary()}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, image, text in (("source.png", res.images[0], res.infotexts[0]),
                              ("edited.png", res.images[1], res.infotexts[1])):
        save_png(image, out / name, text)
        print(out / name)
    return 0


def cmd_serve(args) -> int:
    from lib_profile.serve import serve

    serve(args.checkpoint, args.port, args.listen, args.data_dir, args.api_auth, args.device, args.controlnet_pose,
          args.controlnet_tile, args.allow_open_api, lora_dirs=_lora_dirs(args))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.data_dir:
        import os

        os.environ["PROFILE_STUDIO_DIR"] = str(Path(args.data_dir).expanduser().resolve())
    from lib_profile.hosts.base import HostError, Interrupted

    try:
        commands = {"doctor": cmd_doctor, "txt2img": cmd_txt2img, "intake": cmd_intake, "download": cmd_download,
                    "train": cmd_train, "tones": cmd_tones, "poses": cmd_poses,
                    "generate": cmd_generate, "serve": cmd_serve, "explain": cmd_explain,
                    "edit": cmd_edit}
        return commands[args.command](args)
    except HostError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, quota, read-only folder: which folder, and exit 2
        import os

        from lib_profile.store.files import is_storage_fault, storage_error

        if not is_storage_fault(exc):
            raise
        folder = getattr(args, "out", None) or os.environ.get("PROFILE_STUDIO_DIR")
        print(f"error: {storage_error(exc, folder)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a full disk as torch ("file write failed") or safetensors ("StorageFull") say it
        from lib_profile.store.files import no_space, out_of_space

        out = getattr(args, "out", None)
        said = str(exc).lower()
        if not (out and any(w in said for w in ("write", "space", "storagefull")) and out_of_space(out)):
            raise
        print(f"error: {no_space(out)}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted):
        print("interrupted", file=sys.stderr)
        return 130
