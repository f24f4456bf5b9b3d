"""``python -m lib_profile doctor``: what this Python has, what runs, and what is missing where."""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Any

from lib_profile import __version__, deps, model_files, paths


def _torch() -> dict[str, Any]:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        return {"installed": False, "error": str(exc)}
    info: dict[str, Any] = {"installed": True, "version": torch.__version__, "cuda": torch.cuda.is_available(),
                            "device": "cpu"}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, vram_gb=round(props.total_memory / 2**30, 1))
    return info


def _dlib_model() -> dict[str, Any]:
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return {"present": False, "message": "missing: pip install face-recognition-models"}
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "dlib_face_recognition_resnet_model_v1.dat"
    return {"present": path.is_file(), "path": str(path),
            "message": "present" if path.is_file() else f"missing file {path}: reinstall face-recognition-models"}


def _face_detection() -> dict[str, Any]:
    """Which face detector works here (mediapipe, else dlib), and why mediapipe is not the one."""
    from lib_profile.hosts.base import HostError
    from lib_profile.photos import faces

    try:
        detector = faces.default_detector()
    except HostError as exc:
        return {"detector": None, "note": str(exc)}
    return {"detector": detector.name, "note": faces.detector_problem()}


def report(data_dir: str | None = None) -> dict[str, Any]:
    packages = {}
    for dist in deps.HOST_PINNED:
        packages[dist] = {"version": deps.installed(dist), "pinned_by_host": True}
    for need in deps.all_needs():
        packages[need.dist] = {"version": deps.installed(need.dist), "ok": deps.satisfied(need), "why": need.why,
                               "wanted": need.install}
    mp_ok = deps.mediapipe_has_models()
    problems = [f"{d}: {'missing' if not p['version'] else 'version ' + p['version'] + ' not usable'}; "
                f"pip install \"{p['wanted']}\"" for d, p in packages.items() if p.get("ok") is False]
    if deps.installed("mediapipe") and not mp_ok:
        problems.append(f"mediapipe {deps.installed('mediapipe')} has no bundled models (mediapipe.solutions); "
                        f"pip install \"{deps.MEDIAPIPE_INSTALL}\"")
    dlib_model = _dlib_model()
    if not dlib_model["present"]:
        problems.append(dlib_model["message"])
    detection = _face_detection()
    if detection["detector"] is None:
        problems.append(detection["note"])
    return {
        "profile_studio": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "data_dir": str(paths.data_dir(data_dir)),
        "torch": _torch(),
        "packages": packages,
        "mediapipe_bundled_models": mp_ok,
        "dlib_face_model": dlib_model,
        "face_detection": detection,
        "models": model_files.status(data_dir),
        "problems": problems,
    }


def format_text(rep: dict[str, Any]) -> str:
    t = rep["torch"]
    lines = [
        f"Profile Studio {rep['profile_studio']}  (Python {rep['python']}, {rep['platform']})",
        f"data folder: {rep['data_dir']}",
        f"torch: {t.get('version', 'missing')}  device: {t.get('device', '-')}"
        + (f"  ({t['vram_gb']} GB)" if t.get("vram_gb") else ""),
        "packages:",
    ]
    for dist, p in rep["packages"].items():
        mark = "host" if p.get("pinned_by_host") else ("ok" if p.get("ok") else "MISSING")
        lines.append(f"  {dist:26s} {p['version'] or '-':14s} {mark}")
    lines.append(f"mediapipe bundled models: {'yes' if rep['mediapipe_bundled_models'] else 'NO'}")
    lines.append(f"dlib face-recognition model: {rep['dlib_face_model']['message']}")
    detection = rep["face_detection"]
    lines.append(f"face detection: {detection['detector'] or 'CANNOT WORK'}"
                 + (f" ({detection['note']})" if detection["note"] else ""))
    lines.append("optional model files:")
    for m in rep["models"]:
        family = f"[{m['family']}] " if m.get("family") else ""
        lines.append(f"  {m['file']:41s} {family}{m['message'] if not m['present'] else 'present in ' + m['folder']}")
    lines.append("problems: none" if not rep["problems"] else "problems:\n  " + "\n  ".join(rep["problems"]))
    return "\n".join(lines)
