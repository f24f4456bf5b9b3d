"""lib_profile.safetensors_header: a file's tensor names, metadata and chosen shapes from its header alone, for every
kind of file a user's model folder holds: None (never an exception) for what is not readable safetensors."""

from __future__ import annotations

import numpy as np
import pytest

from lib_profile.safetensors_header import checkpoint_file_family, read_header, tensor_names

TENSORS = {"model.diffusion_model.input_blocks.0.0.weight": np.zeros((4, 2), np.float16),
           "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": np.zeros((3, 8), np.float16)}


def good(path):
    from safetensors.numpy import save_file

    save_file(TENSORS, str(path), metadata={"ss_base_model_version": "sd_v1"})
    return path


def test_names_metadata_and_only_the_shapes_asked_for(tmp_path):
    header = read_header(good(tmp_path / "m.safetensors"), lambda name: name.startswith("model."))
    assert sorted(header.names) == sorted(TENSORS) and header.metadata == {"ss_base_model_version": "sd_v1"}
    assert header.shapes == {"model.diffusion_model.input_blocks.0.0.weight": (4, 2)}
    assert checkpoint_file_family(tmp_path / "m.safetensors") == "SD1.5"


def _truncated(p):
    good(p)
    p.write_bytes(p.read_bytes()[:-5])


@pytest.mark.parametrize("name, make", [
    ("missing.safetensors", None),
    ("empty.safetensors", lambda p: p.write_bytes(b"")),
    ("garbage.safetensors", lambda p: p.write_bytes(b"not a model at all, just text")),
    ("huge-header.safetensors", lambda p: p.write_bytes((2 ** 62).to_bytes(8, "little") + b"{}")),
    ("bad-json.safetensors", lambda p: p.write_bytes((5).to_bytes(8, "little") + b"{oops")),
    ("truncated.safetensors", _truncated),
    ("folder.safetensors", lambda p: p.mkdir()),
    ("model.ckpt", lambda p: p.write_bytes(b"PK\x03\x04 a pickle")),
    ("model.safetensors.part", lambda p: good(p)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_what_is_not_readable_safetensors_gives_none(tmp_path, name, make):
    path = tmp_path / name
    if make is not None:
        make(path)
    assert read_header(path) is None and tensor_names(path) is None and checkpoint_file_family(path) is None


def test_the_suffix_is_read_in_any_case(tmp_path):
    assert tensor_names(good(tmp_path / "M.SafeTensors")) is not None
