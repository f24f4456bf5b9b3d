"""Face detection that works under the WebUIs' protobuf 3.20.0: dlib when mediapipe's graphs cannot build.

A1111 1.10.1 and Forge pin ``protobuf==3.20.0`` and reinstall it at every normal start; mediapipe 0.10.13-0.10.15
(what ADetailer installs) fails there with "ValidatedGraphConfig Initialization failed". The dlib detector is
checked against mediapipe on every sample photo, and intake is run for real under protobuf 3.20.0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lib_profile import sample_photos
from lib_profile.hosts.base import HostError
from lib_profile.photos import faces

ROOT = Path(__file__).resolve().parent.parent
PROTOBUF_320 = ROOT / ".ci" / "protobuf-3.20.0"
SELFIES = sample_photos.selfies()


def iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def dlib_detector():
    from lib_profile.photos.dlib_faces import DlibDetector

    return DlibDetector()


@pytest.mark.parametrize("name,image", SELFIES, ids=[n for n, _ in SELFIES])
def test_dlib_finds_the_face_mediapipe_finds_with_the_same_pose(name, image, dlib_detector):
    """mediapipe is the oracle: one face, the same place (IoU >= 0.5), yaw and roll within a few degrees."""
    rgb = np.asarray(image.convert("RGB"))
    (mp_face,) = faces.MediapipeDetector().detect(rgb)
    found = dlib_detector.detect(rgb)
    assert len(found) == 1
    face = found[0]
    assert iou(face.box, mp_face.box) >= 0.5
    assert abs(face.roll - mp_face.roll) <= 5 and abs(face.yaw - mp_face.yaw) <= 10
    assert set(face.keypoints) >= {"right_eye", "left_eye", "nose", "mouth"}
    assert face.keypoints["right_eye"][0] < face.keypoints["left_eye"][0]  # the subject's right eye is image left
    assert face.five_points().shape == (5, 2)


def test_dlib_finds_no_face_where_there_is_none(dlib_detector):
    assert dlib_detector.detect(np.asarray(sample_photos.coffee().convert("RGB"))) == []


def test_the_default_detector_falls_back_to_dlib_and_says_why(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("ValidatedGraphConfig Initialization failed.\nConstantSidePacketCalculator: ...")

    monkeypatch.setattr(faces, "MediapipeDetector", broken)
    monkeypatch.setattr(faces, "_default", None)
    monkeypatch.setattr(faces, "_default_problem", None)
    detector = faces.default_detector()
    assert detector.name == "dlib" and "ValidatedGraphConfig" in faces.detector_problem()
    from lib_profile.photos.dlib_faces import DlibDetector

    monkeypatch.setattr(faces, "_default", None)
    monkeypatch.setattr(DlibDetector, "__init__", lambda self: (_ for _ in ()).throw(HostError("no dlib")))
    with pytest.raises(HostError, match="Face detection cannot work: mediapipe cannot run here .* no dlib"):
        faces.default_detector()


SCRIPT = r"""
import json, sys
import google.protobuf
from lib_profile import doctor, sample_photos
from lib_profile.photos.intake import IntakeOptions, run_intake
from lib_profile.studio.pose_detection import from_photo
folder = sys.argv[1]
paths = []
for name, image in sample_photos.selfies()[:6]:
    image.save(f"{folder}/{name}.jpg")
report = run_intake(folder, f"{folder}/intake", IntakeOptions(token="zkw", class_word="woman"))
try:
    from_photo(sample_photos.astronaut())
    pose = "made"
except Exception as e:
    pose = f"{type(e).__name__}: {e}"
print(json.dumps({"protobuf": google.protobuf.__version__, "detector": report["face_detector"],
                  "accepted": report["counts"]["accepted"], "doctor": doctor.report()["face_detection"],
                  "pose": pose}))
"""


@pytest.mark.skipif(not (PROTOBUF_320 / "google" / "protobuf" / "__init__.py").is_file(),
                    reason="bash .ci/setup puts protobuf 3.20.0 in .ci/protobuf-3.20.0")
def test_intake_works_under_the_webuis_protobuf_3_20(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PROTOBUF_320), str(ROOT)]))
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["protobuf"] == "3.20.0"
    assert result["detector"]["name"] == "dlib" and "protobuf" in result["detector"]["note"]
    assert result["accepted"] >= 5
    assert result["doctor"]["detector"] == "dlib"
    assert result["pose"].startswith("HostError: A pose from a photo needs mediapipe, which cannot run here")


def test_dlib_finds_a_small_face_in_a_12_megapixel_photo_by_tiles(dlib_detector):
    """dlib's first look (the photo at 1024 px, upsampled once) sees faces down to ~180 px of a 4000 px photo;
    the tiled search finds a 100 px one, where it is."""
    from PIL import Image

    from lib_profile.photos import multiscale

    canvas = Image.new("RGB", (4000, 3000), (118, 118, 118))
    head = sample_photos.astronaut().crop((96, 0, 356, 260)).resize((250, 250), Image.LANCZOS)  # face ~100 px
    canvas.paste(head, (3000, 500))
    rgb = np.asarray(canvas)
    assert dlib_detector.detect(rgb) == []
    search = multiscale.find_faces(dlib_detector, rgb, smallest=48)
    assert len(search.tiles) >= 2 and search.calls <= dlib_detector.max_search_calls + multiscale.MAX_REFINED
    (face,) = search.faces
    cx, cy = face.center
    assert abs(cx - (3000 + 125)) < 30 and abs(cy - (500 + 115)) < 30 and 60 < face.height < 130, face.box
