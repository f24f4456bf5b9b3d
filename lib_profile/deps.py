"""What Profile Studio needs beside what the WebUI already has, and how to check it fast.

Used by ``install.py`` (runs at every WebUI start, so it reads package metadata only, never
imports the packages) and by ``doctor``. Packages the WebUI pins are never installed or upgraded
by us; a pip run holds them at their installed versions with a constraints file.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
from dataclasses import dataclass
from pathlib import Path

# The WebUI pins these (A1111 and Forge pin different versions); we never change them.
HOST_PINNED = ("torch", "torchvision", "gradio", "pydantic", "fastapi", "transformers", "numpy", "Pillow",
               "safetensors", "protobuf", "huggingface-hub", "open-clip-torch", "accelerate", "httpx")

MEDIAPIPE_MIN, MEDIAPIPE_MAX = "0.10.13", "0.10.21"  # the range that still bundles mediapipe.solutions models
MEDIAPIPE_PROTOBUF = "4.25.3"  # the lowest protobuf mediapipe 0.10.13+ runs with (the WebUIs pin 3.20.0)
MEDIAPIPE_INSTALL = "mediapipe==0.10.14"  # inside ADetailer's accepted range (0.10.13-0.10.15)


@dataclass(frozen=True)
class Need:
    dist: str  # distribution name
    why: str
    low: str | None = None  # lowest acceptable version (inclusive)
    high: str | None = None  # highest acceptable version (inclusive)
    install: str | None = None  # pip spec installed when missing or out of range
    import_name: str | None = None


def diffusers_need(transformers_version: str | None) -> Need:
    """diffusers 0.32+ imports transformers classes that A1111's transformers 4.30.2 lacks."""
    old = transformers_version is not None and _v(transformers_version) < _v("4.41")
    if old:
        return Need("diffusers", "the diffusers host and LoRA trainer", "0.27.0", "0.31.0", "diffusers==0.31.0")
    return Need("diffusers", "the diffusers host and LoRA trainer", "0.31.0", None, "diffusers>=0.31.0")


NEEDS: tuple[Need, ...] = (
    Need("mediapipe", "face detection, face mesh, pose and selfie segmentation (bundled models)",
         MEDIAPIPE_MIN, MEDIAPIPE_MAX, MEDIAPIPE_INSTALL),
    Need("onnxruntime", "optional ArcFace and DWPose ONNX models", "1.16.0", None, "onnxruntime>=1.16"),
    Need("dlib-bin", "the offline face-recognition embedder", None, None, "dlib-bin>=19.24", import_name="dlib"),
    Need("face-recognition-models", "the dlib face-recognition model files", "0.3.0", None,
         "face-recognition-models==0.3.0"),
    Need("pillow-heif", "reading iPhone HEIC/HEIF photos", "0.16.0", None, "pillow-heif==0.16.0"),
    Need("ultralytics", "optional YOLO face detector", "8.1.0", None, "ultralytics==8.4.100"),
    Need("controlnet-aux", "OpenPose drawing for pose control maps", "0.0.7", None, "controlnet-aux==0.0.10"),
    Need("torchsde", "the DPM++ SDE sampler", None, None, "torchsde"),
    Need("Unidecode", "identity and photo names in any script (safe ASCII folder names)", "1.3.0", None,
         "Unidecode==1.4.0"),
    Need("procrastinate", "cluster mode: the job queue on PostgreSQL (docs/cluster.md)", "3.0.0", None,
         "procrastinate==3.10.0"),
    Need("psycopg-binary", "cluster mode: psycopg's bundled libpq (a system libpq also works)", "3.1.0", None,
         "psycopg-binary==3.3.9", import_name="psycopg_binary"),
)


def _v(text: str):
    from packaging.version import Version

    return Version(text)


def installed(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def satisfied(need: Need) -> bool:
    version = installed(need.dist)
    if version is None:
        # a differently named build of the same module (e.g. a compiled dlib) also counts
        return need.import_name is not None and importlib.util.find_spec(need.import_name) is not None
    try:
        v = _v(version)
    except Exception:  # noqa: BLE001 - an odd local version string: trust it
        return True
    return (need.low is None or v >= _v(need.low)) and (need.high is None or v <= _v(need.high))


def mediapipe_has_models() -> bool:
    """Whether the installed mediapipe still ships ``solutions`` with its bundled models (checked on disk)."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        return False
    root = Path(list(spec.submodule_search_locations)[0])
    return (root / "python" / "solutions").is_dir() and (
        root / "modules" / "face_detection" / "face_detection_short_range.tflite").is_file()


def all_needs() -> list[Need]:
    return [diffusers_need(installed("transformers")), *NEEDS]


def mediapipe_can_run() -> bool:
    """Whether the protobuf installed lets mediapipe 0.10.13+ build its graphs. A1111 1.10.1 and Forge pin
    ``protobuf==3.20.0`` and put it back at every normal start: there mediapipe cannot run, and installing it
    would only pull a newer protobuf that the WebUI removes again (faces are found with dlib instead)."""
    version = installed("protobuf")
    return version is None or _v(version) >= _v(MEDIAPIPE_PROTOBUF)


def missing() -> list[Need]:
    """What pip must install: needs that are absent or outside their range (and a model-less mediapipe), less
    mediapipe where the WebUI's protobuf would not let it run."""
    out = [n for n in all_needs() if not satisfied(n)]
    if installed("mediapipe") and not mediapipe_has_models() and not any(n.dist == "mediapipe" for n in out):
        out.append(next(n for n in NEEDS if n.dist == "mediapipe"))
    if not mediapipe_can_run():
        out = [n for n in out if n.dist != "mediapipe"]
    return out


def pinned_constraints() -> list[str]:
    """``name==version`` for every host-pinned package present, to hold them still during a pip run."""
    return [f"{d}=={v}" for d in HOST_PINNED if (v := installed(d))]
