"""``intake``: check selfies photo by photo and make the training set (exit 2 when not ready to train)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def add_intake_parser(sub) -> None:
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
