"""Pose templates, OpenPose JSON, the ControlNet-style drawing, poses from photos (mediapipe, DWPose)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lib_profile.hosts.base import HostError
from lib_profile.studio import pose as studio_pose
from lib_profile.studio import pose_detection

NOSE, NECK, R_SH, L_SH, R_EYE, L_EYE, R_EAR, L_EAR = 0, 1, 2, 5, 14, 15, 16, 17
NAMES = [p.stem for p in sorted(studio_pose.POSES_DIR.glob("*.json"))]


def _dist(pose, a, b):
    return float(np.hypot(*(pose.body[a, :2] - pose.body[b, :2])))


def test_at_least_eight_curated_templates():
    assert len(NAMES) >= 8
    poses = studio_pose.list_poses()
    assert [p.name for p in poses] == sorted(NAMES)
    for must in ("frontal_shoulders", "three_quarter_left", "three_quarter_right", "arms_crossed", "hand_on_chin"):
        assert must in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_template_is_a_plausible_portrait(name):
    pose = studio_pose.load_pose(name)
    b = pose.body
    assert pose.name == name and pose.title and pose.description.endswith(".")
    assert pose.framing in studio_pose.FRAMINGS
    assert (pose.width, pose.height) == (512, 768)  # SD1.5's 2:3 portrait
    assert b.shape == (18, 3) and set(np.unique(b[:, 2])) <= {0.0, 1.0}
    vis = b[b[:, 2] > 0]
    assert np.all((vis[:, 0] >= 0) & (vis[:, 0] < pose.width) & (vis[:, 1] >= 0) & (vis[:, 1] < pose.height))
    for i in (NOSE, NECK, R_SH, L_SH, R_EYE, L_EYE):
        assert pose.visible(i), studio_pose.KEYPOINT_NAMES[i]
    assert b[NOSE, 1] < b[NECK, 1]  # nose above the neck
    assert b[R_SH, 0] < b[NECK, 0] < b[L_SH, 0]  # the subject's right shoulder on the image's left
    assert abs(b[NECK, 0] - (b[R_SH, 0] + b[L_SH, 0]) / 2) < 1 and abs(b[NECK, 1] - (b[R_SH, 1] + b[L_SH, 1]) / 2) < 1
    assert b[NOSE, 1] < pose.height / 2 and b[R_EYE, 1] < pose.height / 3  # the face in the upper part
    assert max(b[R_EYE, 1], b[L_EYE, 1]) < b[NOSE, 1]  # eyes above the nose
    eye_span = _dist(pose, R_EYE, L_EYE)
    assert abs(b[R_EYE, 1] - b[L_EYE, 1]) < 0.3 * eye_span  # eyes level unless gently tilted
    assert 1.8 < _dist(pose, NOSE, NECK) / eye_span < 4.0  # head on a neck, not floating or squashed
    for ear in (R_EAR, L_EAR):
        if pose.visible(ear):
            assert abs(b[ear, 1] - b[NOSE, 1]) < eye_span * 1.2
    if pose.visible(R_EAR) and pose.visible(L_EAR) and name in ("frontal_shoulders", "head_tilt", "hands_on_hips"):
        assert 2.0 < _dist(pose, R_SH, L_SH) / _dist(pose, R_EAR, L_EAR) < 3.0  # shoulders ~2x the head's width
    for a, c in ((2, 3), (3, 4), (5, 6), (6, 7)):  # upper arms and forearms of a plausible length
        if pose.visible(a) and pose.visible(c):
            assert _dist(pose, a, c) < 1.7 * _dist(pose, NOSE, NECK)
    if pose.framing == "half body":
        assert pose.visible(8) and pose.visible(11) and b[8, 1] > b[NECK, 1] + 2 * eye_span
    assert studio_pose.thumbnail_path(name).is_file()
    with Image.open(studio_pose.thumbnail_path(name)) as thumb:
        assert thumb.size == (128, 192) and thumb.mode == "RGB"
        assert np.array_equal(np.asarray(thumb), np.asarray(studio_pose.thumbnail(pose)))  # in step with the JSON


def test_mirrored_templates_swap_sides():
    left, right = studio_pose.load_pose("three_quarter_left"), studio_pose.load_pose("three_quarter_right")
    assert np.allclose(left.body[NOSE, 0], 512 - right.body[NOSE, 0], atol=0.2)
    assert np.allclose(left.body[R_SH, 0], 512 - right.body[L_SH, 0], atol=0.2)


def _colour_near(img: np.ndarray, xy, colour, r=3) -> bool:
    x, y = int(xy[0]), int(xy[1])
    patch = img[max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1].reshape(-1, 3)
    return bool(np.any(np.all(np.abs(patch.astype(int) - colour) <= 2, axis=1)))


@pytest.mark.parametrize("size", [(512, 768), (768, 1152), (64, 96)])
def test_render_sizes(size):
    pose = studio_pose.load_pose("frontal_shoulders")
    img = studio_pose.render(pose, *size)
    assert img.size == size and img.mode == "RGB"
    arr = np.asarray(img)
    assert arr.any()
    s = size[0] / 512
    neck = pose.body[NECK, :2] * s
    mid = (pose.body[NECK, :2] + pose.body[R_SH, :2]) / 2 * s  # middle of the neck-to-right-shoulder limb
    x, y = int(mid[0]), int(mid[1])
    assert arr[y - 1:y + 2, x - 1:x + 2].any()
    if size[0] >= 512:
        assert tuple(arr[int(mid[1]), int(mid[0])]) == (153, 0, 0)  # limb colour at 60 %
        assert _colour_near(arr, neck, studio_pose.COLORS[NECK])  # the neck joint's own orange
        assert _colour_near(arr, pose.body[NOSE, :2] * s, studio_pose.COLORS[NOSE])
    black = arr.reshape(-1, 3).any(axis=1).mean()
    assert black < 0.2  # a drawing on black, not a filled image


def test_render_letterboxes_other_aspects():
    pose = studio_pose.load_pose("frontal_shoulders")
    arr = np.asarray(studio_pose.render(pose, 768, 768))  # square: the 2:3 pose centred with bars left and right
    cols = np.nonzero(arr.any(axis=(0, 2)))[0]
    assert cols.min() > 128 and cols.max() < 768 - 128
    assert _colour_near(arr, (pose.body[NECK, 0] + 128, pose.body[NECK, 1]), studio_pose.COLORS[NECK])


def _hands_face_pose():
    pose = studio_pose.load_pose("hand_on_chin")
    wrist = pose.body[4, :2]
    hand = np.zeros((21, 3))
    for i in range(21):
        finger, joint = (i - 1) // 4, (i - 1) % 4
        hand[i] = (wrist[0] - 18 + finger * 9, wrist[1] - 10 - joint * 9, 1.0) if i else (*wrist, 1.0)
    face = np.zeros((70, 3))
    nose = pose.body[NOSE, :2]
    for i in range(68):
        a = 2 * np.pi * i / 68
        face[i] = (nose[0] + 40 * np.cos(a), nose[1] + 50 * np.sin(a), 1.0)
    pose.hands = [np.zeros((21, 3)), hand]
    pose.face = face
    return pose


def test_render_matches_controlnet_preprocessor_drawing():
    """Pixel for pixel (up to rounding) what controlnet_aux's OpenPose drawing makes of the same points."""
    try:
        from controlnet_aux.open_pose import util
        from controlnet_aux.open_pose.body import Keypoint
    except Exception as exc:  # noqa: BLE001 - optional, heavy package
        pytest.skip(f"controlnet_aux not importable: {exc}")
    pose = _hands_face_pose()
    W, H = 512, 768

    def kps(arr, absent=None):  # the body drawing skips None, hands and face skip points at (0, 0)
        return [Keypoint(x / W, y / H) if c > 0 else absent for x, y, c in arr]

    ref = np.zeros((H, W, 3), dtype=np.uint8)
    ref = util.draw_bodypose(ref, kps(pose.body))
    for hand in pose.hands:
        if hand[:, 2].any():
            ref = util.draw_handpose(ref, kps(hand, Keypoint(0, 0)))
    ref = util.draw_facepose(ref, kps(pose.face, Keypoint(0, 0)))
    ours = np.asarray(studio_pose.render(pose, W, H))
    differ = np.any(np.abs(ref.astype(int) - ours.astype(int)) > 2, axis=2)
    assert differ.mean() < 0.002, differ.sum()


def test_render_draws_hands_and_face():
    pose = _hands_face_pose()
    arr = np.asarray(studio_pose.render(pose, 512, 768))
    assert _colour_near(arr, pose.hands[1][8, :2], (0, 0, 255))  # hand joints in blue
    assert _colour_near(arr, pose.face[17, :2], (255, 255, 255))  # face points in white


def test_unknown_name_lists_available():
    with pytest.raises(HostError) as err:
        studio_pose.load_pose("no_such_pose")
    msg = str(err.value)
    assert "no_such_pose" in msg and "frontal_shoulders" in msg and "arms_crossed" in msg


def test_bad_files(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{ not json", encoding="utf-8")
    with pytest.raises(HostError, match="Cannot read pose file"):
        studio_pose.load_pose(bad)
    with pytest.raises(HostError, match="not found"):
        studio_pose.load_pose(tmp_path / "missing.json")
    short = tmp_path / "short.json"
    short.write_text(json.dumps({"canvas_width": 512, "canvas_height": 768,
                                 "people": [{"pose_keypoints_2d": [1.0, 2.0, 1.0] * 17}]}))
    with pytest.raises(HostError, match="51 numbers; expected 18 points"):
        studio_pose.load_pose(short)
    nobody = tmp_path / "nobody.json"
    nobody.write_text(json.dumps({"canvas_width": 512, "canvas_height": 768, "people": []}))
    with pytest.raises(HostError, match="no person"):
        studio_pose.load_pose(nobody)
    no_canvas = tmp_path / "no_canvas.json"
    no_canvas.write_text(json.dumps({"people": [{"pose_keypoints_2d": [10.0, 20.0, 1.0] * 18}]}))
    with pytest.raises(HostError, match="canvas_width"):
        studio_pose.load_pose(no_canvas)
    hand = tmp_path / "hand.json"
    hand.write_text(json.dumps({"canvas_width": 512, "canvas_height": 768, "people": [
        {"pose_keypoints_2d": [10.0, 20.0, 1.0] * 18, "hand_left_keypoints_2d": [1.0] * 60}]}))
    with pytest.raises(HostError, match="hand_left_keypoints_2d"):
        studio_pose.load_pose(hand)


def test_json_round_trip(tmp_path):
    pose = _hands_face_pose()
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(studio_pose.pose_to_json(pose)), encoding="utf-8")
    back = studio_pose.load_pose(path)
    assert (back.name, back.title, back.description, back.framing) == (pose.name, pose.title, pose.description,
                                                                      pose.framing)
    assert (back.width, back.height) == (512, 768)
    assert np.allclose(back.body, pose.body, atol=0.01)
    assert np.allclose(back.hands[1], pose.hands[1], atol=0.01) and not back.hands[0].any()
    assert np.allclose(back.face, pose.face, atol=0.01)
    for name in NAMES:  # the shipped files are exactly what pose_to_json writes
        assert studio_pose.pose_to_json(studio_pose.load_pose(name)) == json.loads((studio_pose.POSES_DIR / f"{name}.json").read_text())


def test_editor_json_without_our_fields(tmp_path):
    """A plain ControlNet OpenPose-editor file: normalised coordinates, 68-point face, no name/title."""
    body = studio_pose.load_pose("arms_crossed").body.copy()
    body[:, 0] /= 512
    body[:, 1] /= 768
    face = [0.5, 0.2, 1.0] * 68
    path = tmp_path / "editor_pose.json"
    path.write_text(json.dumps({"canvas_width": 512, "canvas_height": 768,
                                "people": [{"pose_keypoints_2d": body.ravel().tolist(), "face_keypoints_2d": face}]}))
    pose = studio_pose.load_pose(str(path))
    assert pose.name == "editor_pose" and pose.title == "Editor pose" and pose.framing == "half body"
    assert np.allclose(pose.body[:, :2], studio_pose.load_pose("arms_crossed").body[:, :2], atol=0.01)
    assert pose.face.shape == (70, 3) and pose.face[68:].sum() == 0 and pose.face[0, 0] == pytest.approx(256)


def test_from_photo_astronaut(astronaut):
    pose = pose_detection.from_photo(astronaut)
    b = pose.body
    assert (pose.width, pose.height) == (512, 512)
    for i in (NOSE, NECK, R_SH, L_SH, R_EYE, L_EYE):
        assert pose.visible(i), studio_pose.KEYPOINT_NAMES[i]
    assert b[R_SH, 0] < b[NOSE, 0] < b[L_SH, 0]
    assert b[NECK, 1] > b[NOSE, 1] + 50
    assert b[R_EYE, 0] < b[L_EYE, 0] and max(b[R_EYE, 1], b[L_EYE, 1]) < b[NOSE, 1]
    vis = b[b[:, 2] > 0]
    assert np.all((vis[:, :2] >= 0) & (vis[:, :2] < 512))
    assert np.asarray(studio_pose.render(pose, 512, 768)).any()


def test_from_photo_without_person():
    from lib_profile import sample_photos

    with pytest.raises(HostError, match="No person"):
        pose_detection.from_photo(sample_photos.coffee())


# --------------------------------------------------------------------------------------------- DWPose

def test_dwpose_missing_files_say_where(data_dir):
    with pytest.raises(HostError) as err:
        pose_detection.DWPoseOnnx()
    assert "yolox_l.onnx" in str(err.value) and "ProfileStudio" in str(err.value)


def _save_constant_model(path, inp_name, inp_shape, outputs):
    """An ONNX graph with the real model's input and outputs that returns fixed arrays."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes, outs = [], []
    for name, arr in outputs.items():
        nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr.astype(np.float32))))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(arr.shape)))
    graph = helper.make_graph(nodes, "standin", [helper.make_tensor_value_info(inp_name, TensorProto.FLOAT, inp_shape)],
                              outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def _standin_dwpose(tmp_path):
    """YOLOX stand-in: one person box (100, 60)-(300, 560) in a 400x600 image, a weaker duplicate and a
    non-person box. Pose stand-in: peaks at chosen points of the 288x384 model input."""
    r = 640 / 600
    det = np.zeros((1, 8400, 85), dtype=np.float32)

    def put(idx, stride, gx, gy, box, obj, cls):
        (x1, y1, x2, y2) = [v * r for v in box]
        det[0, idx, 0:2] = ((x1 + x2) / 2 / stride - gx, (y1 + y2) / 2 / stride - gy)
        det[0, idx, 2:4] = (np.log((x2 - x1) / stride), np.log((y2 - y1) / stride))
        det[0, idx, 4] = obj
        det[0, idx, 5 + cls] = 1.0

    put(8000 + 10 * 20 + 6, 32, 6, 10, (100, 60, 300, 560), 0.9, 0)
    put(8000 + 10 * 20 + 7, 32, 7, 10, (104, 64, 304, 556), 0.7, 0)  # overlapping: removed by NMS
    put(6400 + 5 * 40 + 5, 16, 5, 5, (10, 10, 60, 60), 0.95, 56)  # a chair, not a person
    # box (100,60)-(300,560): centre (200, 310), padded 250x625 -> 468.75x625 at 288:384
    sx, sy = np.zeros((1, 133, 576)), np.zeros((1, 133, 768))
    placed = {0: (144, 100), 5: (200, 190), 6: (88, 190), 9: (210, 330), 91: (100, 300), 112: (190, 300),
              30: (144, 110)}
    for k, (u, v) in placed.items():
        sx[0, k, int(u * 2)] = 0.9
        sy[0, k, int(v * 2)] = 0.8
    det_path = _save_constant_model(tmp_path / "yolox_l.onnx", "images", [1, 3, 640, 640], {"output": det})
    pose_path = _save_constant_model(tmp_path / "dw-ll_ucoco_384.onnx", "input", [1, 3, 384, 288],
                                     {"simcc_x": sx, "simcc_y": sy})
    return det_path, pose_path


def test_dwpose_pipeline_geometry(tmp_path):
    pytest.importorskip("onnxruntime")
    det_path, pose_path = _standin_dwpose(tmp_path)
    model = pose_detection.DWPoseOnnx(det_path, pose_path, providers=["CPUExecutionProvider"])
    image = Image.new("RGB", (400, 600), (90, 90, 90))
    boxes = model.detect_people(np.asarray(image))
    assert boxes.shape == (1, 4) and np.allclose(boxes[0], (100, 60, 300, 560), atol=0.05)
    pose = model(image)

    def img(u, v):  # model input (u, v) -> image: scale 468.75/288 = 625/384, origin (200, 310) - half the box
        return (u * 625 / 384 + 200 - 234.375, v * 625 / 384 + 310 - 312.5)

    assert pose.body[NOSE] == pytest.approx((*img(144, 100), 1.0), abs=0.01)
    assert pose.body[L_SH] == pytest.approx((*img(200, 190), 1.0), abs=0.01)  # whole-body 5 = left shoulder
    assert pose.body[R_SH] == pytest.approx((*img(88, 190), 1.0), abs=0.01)  # whole-body 6 = right shoulder
    assert pose.body[NECK, :2] == pytest.approx(img(144, 190), abs=0.01)
    assert pose.body[7] == pytest.approx((*img(210, 330), 1.0), abs=0.01)  # whole-body 9 = left wrist
    assert pose.body[R_EYE, 2] == 0 and pose.body[8, 2] == 0  # no peak: not visible
    assert pose.hands[0][0] == pytest.approx((*img(100, 300), 1.0), abs=0.01)  # left hand root
    assert pose.hands[1][0] == pytest.approx((*img(190, 300), 1.0), abs=0.01)
    assert pose.face.shape == (70, 3) and pose.face[7] == pytest.approx((*img(144, 110), 1.0), abs=0.01)
    assert np.asarray(studio_pose.render(pose, 400, 600)).any()


def test_dwpose_rejects_wrong_models(tmp_path):
    pytest.importorskip("onnxruntime")
    det_path, pose_path = _standin_dwpose(tmp_path)
    with pytest.raises(HostError, match="yolox_l.onnx"):
        pose_detection.DWPoseOnnx(pose_path, pose_path)
    with pytest.raises(HostError, match="dw-ll_ucoco_384.onnx"):
        pose_detection.DWPoseOnnx(det_path, det_path)
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(HostError, match="Cannot load"):
        pose_detection.DWPoseOnnx(bad, pose_path)


def test_dwpose_no_person(tmp_path):
    pytest.importorskip("onnxruntime")
    _, pose_path = _standin_dwpose(tmp_path)
    empty = _save_constant_model(tmp_path / "empty.onnx", "images", [1, 3, 640, 640],
                                 {"output": np.zeros((1, 8400, 85), dtype=np.float32)})
    with pytest.raises(HostError, match="No person"):
        pose_detection.DWPoseOnnx(empty, pose_path)(Image.new("RGB", (64, 64)))
