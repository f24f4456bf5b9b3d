"""Identity embedders: dlib (offline default) on real photos, and the ArcFace ONNX loader."""

import numpy as np
import pytest
import torch

from lib_profile import sample_photos
from lib_profile.hosts.base import HostError
from lib_profile.identity.embed import (ArcFaceOnnxEmbedder, DlibEmbedder, align_112, cosine, default_embedder,
                                        reference_embedding)
from lib_profile.photos.faces import default_detector


def face_of(image):
    rgb = np.asarray(image)
    return rgb, default_detector().detect(rgb)[0]


def test_dlib_tells_two_people_apart_and_keeps_one_person_together():
    emb = default_embedder()
    same = [emb.embed(*face_of(im)) for _, im in sample_photos.selfies(sample_photos.astronaut, 6)]
    other = emb.embed(*face_of(sample_photos.grace_hopper()))
    ref = reference_embedding(same)
    assert all(cosine(e, ref) > emb.same_person_min + 0.05 for e in same)
    assert cosine(other, ref) < emb.same_person_min
    assert emb.dim == 128 and same[0].shape == (128,)


def test_alignment_puts_the_eyes_where_arcface_expects(astronaut):
    rgb, face = face_of(astronaut)
    aligned = align_112(rgb, face.five_points())
    assert aligned.shape == (112, 112, 3)
    again = default_detector().detect(np.ascontiguousarray(np.kron(aligned, np.ones((4, 4, 1), np.uint8))))
    assert again, "an aligned face is still a face"


class TinyArcFace(torch.nn.Module):
    """Same input/output signature as insightface's w600k_r50.onnx: (N, 3, 112, 112) -> (N, 512)."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=4), torch.nn.ReLU(), torch.nn.Flatten(),
                                       torch.nn.Linear(8 * 27 * 27, 512))

    def forward(self, x):
        return self.net(x)


def export(model, path, side=112):
    torch.manual_seed(0)
    torch.onnx.export(model, torch.randn(1, 3, side, side), str(path), dynamo=False, input_names=["input"],
                      output_names=["embedding"], dynamic_axes={"input": {0: "n"}})
    return path


@pytest.fixture(scope="module")
def arcface_file(tmp_path_factory):
    torch.manual_seed(0)
    return export(TinyArcFace().eval(), tmp_path_factory.mktemp("onnx") / "w600k_r50.onnx")


def test_arcface_onnx_loads_and_embeds(arcface_file, astronaut, grace_hopper):
    emb = ArcFaceOnnxEmbedder(arcface_file)
    assert emb.dim == 512
    a1 = emb.embed(*face_of(astronaut))
    a2 = emb.embed(*face_of(astronaut))
    b = emb.embed(*face_of(grace_hopper))
    assert a1.shape == (512,) and np.array_equal(a1, a2)
    assert cosine(a1, b) < 0.9999  # different faces, different vectors (random weights: no more is claimed)


def test_arcface_loader_refuses_wrong_models(tmp_path, arcface_file):
    with pytest.raises(HostError, match="put w600k_r50.onnx in"):
        ArcFaceOnnxEmbedder(tmp_path / "w600k_r50.onnx")
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(arcface_file.read_bytes()[:300])
    with pytest.raises(HostError, match="Is the file complete"):
        ArcFaceOnnxEmbedder(cut)
    wrong = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(8))
    wrong(torch.randn(1, 3, 64, 64))
    with pytest.raises(HostError, match=r"takes input .*\(N, 3, 112, 112\)"):
        ArcFaceOnnxEmbedder(export(wrong, tmp_path / "wrong.onnx", side=64))


def test_dlib_embedder_is_constructible_offline():
    assert DlibEmbedder().same_person_min == pytest.approx(0.91, abs=0.02)
