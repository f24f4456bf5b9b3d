"""Real SD1.5 shapes (random weights): the single-file path at full size. Run: bash .ci/test -m slow"""

import numpy as np
import pytest

from lib_profile.hosts.base import Txt2ImgRequest

pytestmark = pytest.mark.slow


def test_full_size_checkpoint_loads_and_generates(full_size_checkpoint, data_dir):
    from lib_profile.hosts.diffusers.host import DiffusersHost

    host = DiffusersHost(full_size_checkpoint, device="cpu", data_dir=data_dir)
    n_unet = sum(p.numel() for p in host.model.unet.parameters())
    n_text = sum(p.numel() for p in host.model.text_encoder.parameters())
    assert 855e6 < n_unet < 866e6 and 122e6 < n_text < 124e6
    assert host.model.configs["unet"]["cross_attention_dim"] == 768
    result = host.txt2img(Txt2ImgRequest(prompt="a portrait", width=128, height=128, steps=2, seed=1))
    assert result.images[0].size == (128, 128) and np.asarray(result.images[0]).std() > 0
