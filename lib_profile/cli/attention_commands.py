"""``explain`` (DAAM word heat maps) and ``edit`` (Prompt-to-Prompt) of a new image of a prompt, or of a real photo
(``--photo FILE``, :mod:`.photo_commands`)."""

from __future__ import annotations

from pathlib import Path

from lib_profile.cli.common import add_lora_dir_argument, lora_arg, lora_dirs, print_lora_notes
from lib_profile.cli.photo_commands import add_photo_options, edit_photo_command, explain_photo_command


# explain and edit of a prompt: a 2:3 portrait by default (SD1.5's here; the checkpoint family's once the host is
# made: :func:`family_size`)
PORTRAIT_DEFAULTS = {"negative_prompt": "", "width": 512, "height": 768, "steps": 25, "cfg_scale": 6.5,
                     "sampler": "DPM++ 2M", "scheduler": "Karras", "clip_skip": 1}


def add_portrait_arguments(p) -> None:
    """The generation settings explain and edit share: the options of :class:`SourceSettings` (defaults:
    ``PORTRAIT_DEFAULTS``), seed and LoRAs."""
    from lib_profile.studio.settings import SourceSettings, add_arguments

    add_arguments(p, SourceSettings)
    p.add_argument("--seed", type=int, default=-1)
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:WEIGHT]")
    add_lora_dir_argument(p)


def portrait_request(args):
    from lib_profile.hosts.base import Txt2ImgRequest
    from lib_profile.studio.settings import SourceSettings, from_arguments

    settings = {**PORTRAIT_DEFAULTS, **from_arguments(args, SourceSettings)}
    req = Txt2ImgRequest(prompt=args.prompt, seed=args.seed, loras=[lora_arg(x) for x in args.lora], **settings)
    req.validate()
    return req


def family_size(req, args, host) -> None:
    """Without ``--width``/``--height``, the request takes the 2:3 portrait size of the checkpoint's family (512x768
    SD1.5, 832x1216 SDXL), as the studio's plans do."""
    from lib_profile.families import family
    from lib_profile.studio.settings import SourceSettings, from_arguments

    given = from_arguments(args, SourceSettings)
    width, height = family(host.model_family).portrait
    req.width, req.height = given.get("width", width), given.get("height", height)
    req.validate()


def parse_range(text):
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


def add_explain_parser(sub) -> None:
    p = sub.add_parser("explain", help="which pixels each prompt word drives (DAAM heat maps) for one image, or "
                       "for a real photo (--photo)")
    p.add_argument("--checkpoint", required=True, help="an SD1.5 checkpoint file, or 'tiny'")
    p.add_argument("--prompt", help="make a new image of this prompt (or give --photo)")
    add_photo_options(p)
    p.add_argument("--word", action="append", required=True, help="a word or phrase of the prompt (repeatable)")
    add_portrait_arguments(p)
    p.add_argument("--layers", help="only cross-attention layers FIRST-LAST (0-based, in UNet order)")
    p.add_argument("--step-range", help="only sampling steps FIRST-LAST (0-based)")
    p.add_argument("--hires-pass", action="store_true", help="map the hires fix pass (default: the first pass)")
    p.add_argument("--threshold", type=float, help="also write a mask per word: map > THRESHOLD (0..1)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", required=True)


def add_edit_parser(sub) -> None:
    p = sub.add_parser("edit", help="edit an image (or a real photo: --photo) by editing its prompt "
                       "(Prompt-to-Prompt); writes source and edit")
    p.add_argument("--checkpoint", required=True, help="an SD1.5 checkpoint file, or 'tiny'")
    p.add_argument("--prompt", help="the source prompt of a new image (or give --photo: its --caption is the source)")
    add_photo_options(p)
    p.add_argument("--target", default="", help="the edited prompt (swap, refine)")
    p.add_argument("--mode", default="swap", choices=["swap", "refine", "reweight"])
    p.add_argument("--weight", action="append", default=[], metavar="WORD=C", help="scale a word's attention by C (-2..2)")
    p.add_argument("--blend", action="append", default=[], metavar="WORD", help="change only where WORD attends")
    p.add_argument("--cross-steps", type=float, default=0.8, help="tau: fraction of steps with the source's cross-attention")
    p.add_argument("--self-steps", type=float, default=0.4, help="fraction of steps with the source's self-attention")
    add_portrait_arguments(p)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", required=True)


def _one_source(args) -> bool:
    """Whether the source is a photo; HostError when there is none."""
    if not args.prompt and not args.photo:
        from lib_profile.hosts.base import HostError

        raise HostError("Give --prompt (a new image) or --photo FILE (a real photo)")
    return bool(args.photo)


def cmd_explain(args) -> int:
    from lib_profile.attention.explain import explain, save
    from lib_profile.hosts.diffusers.host import DiffusersHost

    if _one_source(args):
        return explain_photo_command(args, args.word, parse_range(args.layers), parse_range(args.step_range))
    req = portrait_request(args)
    host = DiffusersHost(args.checkpoint, device=args.device, data_dir=args.data_dir, lora_dirs=lora_dirs(args))
    family_size(req, args, host)
    report = save(explain(host, req, args.word, parse_range(args.layers), parse_range(args.step_range),
                          hires_pass=args.hires_pass), args.out, args.threshold)
    for word, files in report["words"].items():
        print(f"{word}: {Path(args.out) / files['overlay']}")
    print_lora_notes({"lora_notes": report["notes"]})
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
    edit_of = lambda source: Edit(source=source, target=args.target, mode=args.mode,  # noqa: E731
                                  cross_steps=args.cross_steps, self_steps=args.self_steps, weights=weights,
                                  blend_words=args.blend)
    if _one_source(args):
        return edit_photo_command(args, edit_of)
    edit = edit_of(args.prompt)
    req = portrait_request(args)
    edit.validate()
    host = DiffusersHost(args.checkpoint, device=args.device, data_dir=args.data_dir, lora_dirs=lora_dirs(args))
    family_size(req, args, host)
    control = edit_control(host, edit, req.negative_prompt)
    res = host.txt2img(edit_request(req, edit), control)
    print_lora_notes(res.params)
    print(f"Prompt-to-Prompt: {edit.mode}, {control.attention.summary()}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, image, text in (("source.png", res.images[0], res.infotexts[0]),
                              ("edited.png", res.images[1], res.infotexts[1])):
        save_png(image, out / name, text)
        print(out / name)
    return 0
