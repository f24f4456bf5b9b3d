"""Selfie intake, end to end: read every photo, find and check the face, score identity, write crops.

``run_intake(photos, out)`` is what the CLI, the API and the tab call. It writes, atomically:
``report.json`` (per photo: status, reasons with values and thresholds, face, identity similarity),
``train/`` (face-centred 512 px crops with captions), ``contact_sheet.png`` and ``identity.json``
(the set's reference embedding, kept for LoRA validation and scoring every portrait).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from lib_profile import __version__
from lib_profile.hosts.base import HostError
from lib_profile.identity.embed import cosine, default_embedder, reference_embedding
from lib_profile.photos import crops, measure, multiscale, reasons
from lib_profile.photos.checks import Thresholds, check_faces, check_quality, check_size, no_face_reason
from lib_profile.photos.contact_sheet import contact_sheet
from lib_profile.photos.faces import default_detector, detector_problem
from lib_profile.photos.reading import read_photo
from lib_profile.photos.reasons import Reason

CLASS_WORDS = ("woman", "man", "person")
REPORT = "report.json"
IDENTITY = "identity.json"
SMALLEST_FACE = 0.75  # faces are searched down to this fraction of min_face_px, so a smaller one is face_too_small


@dataclass
class IntakeOptions:
    token: str = "ohwx"
    class_word: str = "person"
    crop_ratio: float = 3.0
    crop_size: int = 512
    clean_background: bool = False
    thresholds: Thresholds = field(default_factory=Thresholds)
    detector: str = "mediapipe"  # or "yolo" (a YOLO face model file, e.g. ADetailer's face_yolov8n.pt)
    embedder: str = "dlib"  # or "arcface" (an ArcFace ONNX file, e.g. w600k_r50.onnx)
    detector_model: Optional[str] = None  # path; default: where `doctor` says the file belongs
    embedder_model: Optional[str] = None

    def validate(self) -> None:
        if self.class_word not in CLASS_WORDS:
            raise HostError(f"class word must be one of {', '.join(CLASS_WORDS)}, not {self.class_word!r}")
        if not self.token.isalnum() or not 2 <= len(self.token) <= 24:
            raise HostError(f"identity token must be 2-24 letters or digits, not {self.token!r}")
        if not 1.5 <= self.crop_ratio <= 6.0:
            raise HostError(f"crop ratio must be within 1.5..6 (times the face box), not {self.crop_ratio}")
        if not 256 <= self.crop_size <= 1024 or self.crop_size % 64:
            raise HostError(f"crop size must be a multiple of 64 within 256..1024, not {self.crop_size}")
        if self.detector not in ("mediapipe", "yolo"):
            raise HostError(f"detector must be 'mediapipe' or 'yolo', not {self.detector!r}")
        if self.embedder not in ("dlib", "arcface"):
            raise HostError(f"embedder must be 'dlib' or 'arcface', not {self.embedder!r}")

    def make_detector(self):
        if self.detector == "yolo":
            from lib_profile import model_files
            from lib_profile.photos.faces import YoloFaceDetector

            return YoloFaceDetector(self.detector_model or model_files.path_of("yolo_face"))
        return default_detector()

    def make_embedder(self):
        if self.embedder == "arcface":
            from lib_profile import model_files
            from lib_profile.identity.embed import ArcFaceOnnxEmbedder

            return ArcFaceOnnxEmbedder(self.embedder_model or model_files.path_of("arcface"))
        return default_embedder()


@dataclass
class _Photo:
    path: Path
    image: Any = None
    reasons: list[Reason] = field(default_factory=list)
    face: Any = None
    embedding: Optional[np.ndarray] = None
    print_: Optional[np.ndarray] = None
    metrics: dict[str, float] = field(default_factory=dict)
    similarity: Optional[float] = None
    crop: Optional[str] = None
    shown: str = ""  # the name the user gave the photo


def list_photos(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise HostError(f"Photo folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise HostError(f"No files in {folder}: put about 10 photos of yourself there (5 to 30).")
    return files


def _identity(photos: list[_Photo], threshold: float) -> Optional[np.ndarray]:
    """The largest group of mutually similar faces defines the person; flag the others."""
    cands = [p for p in photos if not p.reasons and p.embedding is not None]
    if not cands:
        return None
    sims = np.array([[cosine(a.embedding, b.embedding) for b in cands] for a in cands])
    counts = (sims >= threshold).sum(1) + sims.mean(1)  # ties broken by overall similarity
    seed = int(np.argmax(counts))
    members = [c.embedding for c, s in zip(cands, sims[seed]) if s >= threshold]
    ref = reference_embedding(members)
    for p in photos:
        if p.embedding is not None:
            p.similarity = cosine(p.embedding, ref)
    for p in cands:
        if p.similarity < threshold:
            p.reasons.append(Reason(reasons.DIFFERENT_PERSON, "This looks like a different person from the rest of the "
                                    "photos. Use only photos of yourself.", round(p.similarity, 3), threshold))
    return ref


def _next_step(n_ok: int, n: int, t: Thresholds, counts: Counter, out: Path) -> str:
    if n_ok >= t.min_photos:  # said for every place a user trains from: the tab, the API, the command line
        return (f"{n_ok} of {n} photos accepted: ready to train. Next: Train (the tab's 2. Train, or POST "
                f".../identities/NAME/train; on the command line: python -m lib_profile train {out} "
                "--checkpoint YOUR_SD15_MODEL --name NAME)")
    tips = {reasons.NO_FACE: "your face clearly visible", reasons.BLURRY: "sharp (not blurry)", reasons.BAD_EXPOSURE: "in good light",
            reasons.MULTIPLE_FACES: "of you alone", reasons.FACE_TOO_SMALL: "closer to the camera",
            reasons.EXTREME_POSE: "facing the camera", reasons.DUPLICATE: "different from each other",
            reasons.DIFFERENT_PERSON: "all of the same person"}
    common = [tips[c] for c, _ in counts.most_common() if c in tips][:3]
    hint = f" Make them {', '.join(common)}." if common else ""
    return (f"Only {n_ok} of {n} photos are usable; training needs at least {t.min_photos}. "
            f"Add {t.min_photos - n_ok} or more photos of yourself.{hint}")


def run_intake(photos: str | Path | list[Path], out: str | Path, options: Optional[IntakeOptions] = None,
               progress: Optional[Callable[[int, int, str], None]] = None,
               names: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """Check the photos and write the intake folder ``out``; returns the report (also in report.json).
    ``names``: ``{file name: the name the user gave}``; the report's ``file`` and the contact sheet show the
    name the user gave (its ``stored`` the file name), so a user can tell which verdict is which photo."""
    opts = options or IntakeOptions()
    opts.validate()
    t = opts.thresholds
    files = list_photos(photos) if not isinstance(photos, list) else [Path(p) for p in photos]
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / REPORT).is_file():
        raise HostError(f"Output folder {out} is not empty and holds no intake; choose a new or empty folder.")
    started = time.perf_counter()
    detector, embedder = opts.make_detector(), opts.make_embedder()
    threshold = t.min_identity if t.min_identity is not None else embedder.same_person_min
    items: list[_Photo] = []
    for i, path in enumerate(files):
        if progress:
            progress(i, len(files), path.name)
        item = _Photo(path)
        item.shown = (names or {}).get(path.name, path.name)
        items.append(item)
        read = read_photo(path, max_pixels=t.max_pixels)
        if read.reason is not None:
            item.reasons.append(read.reason)
            continue
        item.image = read.image
        item.reasons += check_size(*item.image.size, t)
        if item.reasons:
            continue
        rgb = np.asarray(item.image)
        search = multiscale.find_faces(detector, rgb, smallest=SMALLEST_FACE * t.min_face_px)
        faces = search.faces
        if not faces:
            sharp, bright = measure.photo_measures(item.image)
            item.metrics = {"photo_sharpness": round(sharp, 1), "photo_brightness": round(bright, 1)}
            item.reasons.append(no_face_reason(sharp, bright, search.smallest_seen, search.tiles[-1], t))
            continue
        item.reasons += check_faces(faces, t)
        item.face = faces[0]
        patch = measure.face_patch(item.image, item.face, size=128)
        sharp = measure.sharpness(patch)
        bright, clipped = measure.exposure(patch)
        item.metrics = {"sharpness": round(sharp, 1), "brightness": round(bright, 1), "clipped": round(clipped, 3)}
        item.reasons += check_quality(sharp, bright, clipped, item.face, t)
        item.embedding = embedder.embed(rgb, item.face)
        item.print_ = measure.fingerprint(item.image)
    kept: list[_Photo] = []
    for item in items:  # near-identical copies of an earlier good photo
        if item.reasons or item.print_ is None:
            continue
        twin = next((k for k in kept if measure.fingerprint_distance(k.print_, item.print_) < t.duplicate_distance), None)
        if twin is not None:
            dist = measure.fingerprint_distance(twin.print_, item.print_)
            item.reasons.append(Reason(reasons.DUPLICATE, f"A near-identical copy of {twin.shown}; each photo should "
                                       "be a different shot.", round(dist, 2), t.duplicate_distance))
        else:
            kept.append(item)
    ref = _identity(items, threshold)
    return _write(out, items, ref, opts, threshold, embedder, started, detector)


def _write(out: Path, items: list[_Photo], ref, opts: IntakeOptions, threshold: float, embedder,
           started: float, detector=None) -> dict[str, Any]:
    t = opts.thresholds
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "train").mkdir(parents=True)
    try:
        accepted = [p for p in items if not p.reasons]
        for n, item in enumerate(accepted, 1):
            crop = crops.face_crop(item.image, item.face, opts.crop_ratio, opts.crop_size)
            if opts.clean_background:
                crop = crops.clean_background(crop)
            name = f"{n:03d}"
            crop.save(work / "train" / f"{name}.png")
            (work / "train" / f"{name}.txt").write_text(crops.caption(opts.token, opts.class_word) + "\n", "utf-8")
            item.crop = f"train/{name}.png"
        counts = Counter(r.code for p in items for r in p.reasons)
        report = {
            "profile_studio": __version__,
            "photos": [{
                "file": p.shown,
                "stored": p.path.name,
                "status": "rejected" if p.reasons else "accepted",
                "reasons": [r.to_dict() for r in p.reasons],
                "face": p.face.to_dict() if p.face is not None else None,
                "identity_similarity": None if p.similarity is None else round(p.similarity, 4),
                "measures": p.metrics or None,
                "crop": p.crop,
            } for p in items],
            "counts": {"total": len(items), "accepted": len(accepted), "rejected": len(items) - len(accepted),
                       "by_reason": dict(sorted(counts.items()))},
            "min_photos": t.min_photos,
            "ready": len(accepted) >= t.min_photos,
            "next_step": _next_step(len(accepted), len(items), t, counts, out),
            "face_detector": {"name": getattr(detector, "name", None), "note": detector_problem()},
            "identity": {"embedder": embedder.name, "dim": embedder.dim, "same_person_threshold": threshold,
                         "reference": IDENTITY if ref is not None else None},
            "token": opts.token,
            "class_word": opts.class_word,
            "caption": crops.caption(opts.token, opts.class_word),
            "crop_ratio": opts.crop_ratio,
            "crop_size": opts.crop_size,
            "thresholds": t.to_dict(),
            "seconds": round(time.perf_counter() - started, 2),
        }
        if ref is not None:
            (work / IDENTITY).write_text(json.dumps({
                "embedder": embedder.name, "dim": embedder.dim, "same_person_threshold": threshold,
                "photos": len(accepted), "vector": [round(float(v), 6) for v in ref]}), "utf-8")
        sheet = contact_sheet([{
            "image": p.image, "title": p.shown, "accepted": not p.reasons,
            "box": p.face.box if p.face is not None else None,
            "lines": [f"{r.code}: {r.message}" for r in p.reasons] or (
                [f"identity {p.similarity:.2f}"] if p.similarity is not None else []),
        } for p in items])
        sheet.save(work / "contact_sheet.png")
        (work / REPORT).write_text(json.dumps(report, indent=1), "utf-8")
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            out.rename(old)
        work.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return report
