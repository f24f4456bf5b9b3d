"""``doctor``, ``tones``, ``poses`` and ``download``: what this install has, lists, optional model files."""

from __future__ import annotations

import json
import sys


def add_doctor_parser(sub) -> None:
    p = sub.add_parser("doctor", help="report versions, device, and which optional models are missing and where they go")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def add_tones_parser(sub) -> None:
    p = sub.add_parser("tones", help="list the colour-look presets (shipped and your own)")
    p.add_argument("--json", action="store_true")


def add_poses_parser(sub) -> None:
    p = sub.add_parser("poses", help="list the pose template names, one per line")
    p.add_argument("--json", action="store_true")


def add_download_parser(sub) -> None:
    p = sub.add_parser("download", help="download an optional model file into its folder (resumable, checksummed)")
    p.add_argument("model", help="one of the keys `doctor` lists (e.g. yolo_face, arcface, controlnet_openpose)")


def cmd_doctor(args) -> int:
    from lib_profile import doctor

    rep = doctor.report(args.data_dir)
    print(json.dumps(rep, indent=2) if args.json else doctor.format_text(rep))
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
