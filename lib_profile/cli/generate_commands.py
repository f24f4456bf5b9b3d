"""``generate`` (studio portraits from a plan) and ``txt2img`` (plain images through the diffusers host)."""

from __future__ import annotations

import sys
from pathlib import Path

from lib_profile import families
from lib_profile.cli.common import add_lora_dir_argument, lora_arg, lora_dirs, print_lora_notes


def add_generate_parser(sub) -> None:
    from lib_profile.studio.settings import PlanSettings
    from lib_profile.studio.settings import add_arguments as add_settings_arguments

    p = sub.add_parser("generate", help="make studio portraits: pose, tone, face detail, refine, upscale")
    p.add_argument("--checkpoint", required=True, help="an SD1.5 or SDXL checkpoint file, or 'tiny' / 'tiny-sdxl'")
    p.add_argument("--lora", help="the person's LoRA file (from `train`)")
    p.add_argument("--lora-weight", type=float, default=0.9)
    add_lora_dir_argument(p)
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


def add_txt2img_parser(sub) -> None:
    p = sub.add_parser("txt2img", help="generate images through the diffusers host")
    p.add_argument("--checkpoint", required=True, help="an SD1.5 or SDXL .safetensors/.ckpt file, or 'tiny' / "
                   "'tiny-sdxl' (built-in random test models: they draw noise)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--width", type=int, help="default: the checkpoint family's native side (512 SD1.5, 1024 SDXL)")
    p.add_argument("--height", type=int, help="default: the checkpoint family's native side (512 SD1.5, 1024 SDXL)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg-scale", type=float, default=7.0)
    p.add_argument("--sampler", default="Euler a", help="a WebUI sampler name, e.g. 'DPM++ 2M' or 'DPM++ 2M Karras'")
    p.add_argument("--scheduler", default="Automatic", help="schedule type: Automatic, Karras, Exponential, ...")
    p.add_argument("--seed", type=int, default=-1)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--clip-skip", type=int, default=1)
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:WEIGHT]", help="a kohya LoRA file (repeatable)")
    add_lora_dir_argument(p)
    p.add_argument("--controlnet", metavar="MODEL", help="a ControlNet model file ('tiny' with --checkpoint tiny)")
    p.add_argument("--control-image", help="the control map image (e.g. an OpenPose drawing)")
    p.add_argument("--control-weight", type=float, default=1.0)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", required=True, help="output folder (PNG files with WebUI infotext)")


def cmd_generate(args) -> int:
    from lib_profile.hosts.diffusers.host import DiffusersHost, tiny_controlnet
    from lib_profile.studio.plan import build_plan, default_prompt
    from lib_profile.studio.run import run_plan
    from lib_profile.studio.settings import PlanSettings, check_sampler, from_arguments

    settings = from_arguments(args, PlanSettings)  # checked before any model loads
    out = Path(args.out)
    pose = args.pose
    if pose and Path(pose).is_file() and Path(pose).suffix.lower() != ".json":
        from lib_profile.studio.pose_detection import pose_from_photo_file

        out.mkdir(parents=True, exist_ok=True)
        pose = str(pose_from_photo_file(pose, out / "pose-from-photo.json"))
    prompt = args.prompt or default_prompt(args.lora)
    cn = lambda v: str(tiny_controlnet(args.data_dir, args.checkpoint)) if v == "tiny" else v  # noqa: E731
    switches = {s: not getattr(args, f"no_{s}") for s in ("detail", "refine", "detail2", "upscale", "grade")}
    plan_args = (prompt, args.lora, pose, args.tone, args.count, args.seed, switches, args.lora_weight,
                 cn(args.controlnet_pose), cn(args.controlnet_tile), args.data_dir)
    build_plan(*plan_args, **settings)  # checked before the model loads
    host = DiffusersHost(args.checkpoint, device=args.device, data_dir=args.data_dir, lora_dirs=lora_dirs(args))
    plan = build_plan(*plan_args, family=host.model_family, **settings)  # the family's portrait size
    check_sampler(host, settings)
    result = run_plan(plan, host, out, on_stage=lambda n, i, kind: print(f"[{n + 1}/{plan.count}] {kind}",
                                                                         file=sys.stderr))
    for note in result["notes"]:
        print(f"note: {note}", file=sys.stderr)
    for item in result["images"]:
        print(out / item["file"])
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
        model = str(tiny_controlnet(args.data_dir, args.checkpoint)) if args.controlnet == "tiny" else args.controlnet
        units.append(ControlUnit("pose", Image.open(args.control_image).convert("RGB"), model, args.control_weight))
    req = Txt2ImgRequest(prompt=args.prompt, negative_prompt=args.negative_prompt, width=args.width or 512,
                         height=args.height or 512, steps=args.steps, cfg_scale=args.cfg_scale, sampler=args.sampler,
                         scheduler=args.scheduler, seed=args.seed, batch_size=args.batch_size,
                         clip_skip=args.clip_skip, loras=[lora_arg(x) for x in args.lora], controlnets=units)
    req.validate()  # the settings are checked before a model is read
    out = Path(args.out)
    host = DiffusersHost(args.checkpoint, device=args.device, data_dir=args.data_dir, lora_dirs=lora_dirs(args))
    native = families.family(host.model_family).native_size  # no size given: the family's native square
    req.width, req.height = args.width or native, args.height or native
    req.validate()
    result = host.txt2img(req)
    print_lora_notes(result.params)
    out.mkdir(parents=True, exist_ok=True)
    for image, seed, text in zip(result.images, result.seeds, result.infotexts):
        path = save_png(image, out / f"{seed}-{host.model.name}.png", text)
        print(path)
    return 0
