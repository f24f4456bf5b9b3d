"""Training inside a WebUI: the trainer subprocess loads its own copy of the checkpoint, so the WebUI's copy must
leave the device the trainer uses. On a GPU that is VRAM (the model moves to the CPU); on a CPU-only WebUI moving
it frees nothing, and the two copies doubled the RAM (seen in real A1111 and Forge), so there it is dropped and
loaded again afterwards (A1111) or at the next generation (Forge, as after its start)."""

from __future__ import annotations

import gc
import weakref

import pytest

from lib_profile.hosts.webui.flavours import detect_flavour
from lib_profile.hosts.webui.host import WebUIHost
from lib_profile.hosts.webui.model_family import model_family

try:
    from standins import models as standin_models
    from standins import webui as standin
except ImportError:
    from tests.standins import models as standin_models
    from tests.standins import webui as standin

CASES = [(flavour, device) for flavour in ("a1111", "forge") for device in ("cpu", "cuda")]


@pytest.fixture(params=CASES, ids=[f"{f}-{d}" for f, d in CASES])
def loaded(tmp_path, request):
    flavour, device = request.param
    with standin.installed(tmp_path / "webui", flavour=flavour, cn_models=None) as modules:
        log = standin_models.install(flavour, device)
        yield flavour, device, modules, log, WebUIHost(detect_flavour())


def test_the_webuis_model_leaves_the_trainers_device_and_comes_back(loaded):
    flavour, device, modules, log, host = loaded
    before = weakref.ref(modules.sd_models.model_data.sd_model)
    with host.training_slot("task(train)", 4):
        gc.collect()
        model = before()
        if device == "cpu":  # the WebUI's copy is gone from RAM while the trainer holds its own
            assert model is None or model.device == "meta", "the WebUI's model still holds RAM during training"
        else:  # on a GPU it only moves to the CPU, and stays loaded
            assert model is not None and model.device == "cpu"
        del model
    if flavour == "forge" and device == "cpu":  # Forge loads it at the next generation, as after its start
        assert not modules.sd_models.model_data.sd_model.__class__.__name__ == "Model"
        modules.sd_models.forge_model_reload()
    current = modules.sd_models.model_data.sd_model
    # A1111 puts it back on the device; Forge's memory manager moves it there when it next samples
    assert current is not None and current.device == (device if flavour == "a1111" else "cpu")
    assert modules.shared.sd_model is current
    assert len(log["loads"]) == (2 if device == "cpu" else 1)  # reloaded from its file only where it was dropped


def test_a_failed_reload_after_training_does_not_fail_the_training(loaded, capsys):
    """The LoRA is already trained when the WebUI's model is put back; a reload that fails (checkpoint file
    moved meanwhile) is printed, and the WebUI's next generation loads it as it would after a failed load."""
    flavour, device, modules, log, host = loaded
    if flavour != "a1111" or device != "cpu":
        pytest.skip("only A1111 reloads the dropped model right after training")

    def broken(**kw):
        raise FileNotFoundError("model.safetensors")

    modules.sd_models.reload_model_weights = broken
    with host.training_slot("task(train)", 4):
        pass
    assert "could not load its model back" in capsys.readouterr().out


@pytest.mark.parametrize("flag, family", [("is_sd2", "SD2"), ("is_sd3", "SD3")])
def test_a_model_of_another_family_is_refused_before_anything_is_unloaded(loaded, flag, family):
    """Training and generation need SD1.5 or SDXL (tests/test_webui_sdxl.py); an SD2/SD3 model loaded in the
    WebUI is refused with a message naming it, before the WebUI's model is moved or dropped."""
    from lib_profile.hosts.base import HostError, Txt2ImgRequest

    flavour, device, modules, log, host = loaded
    model = modules.sd_models.model_data.sd_model
    setattr(model, flag, True)
    with pytest.raises(HostError, match=f"an {family} checkpoint loaded; pick an SD1.5 or SDXL checkpoint"):
        with host.training_slot("task(train)", 4):
            pytest.fail("training started")
    assert model.device == device and not log["unloads"] and not log["trash"]  # nothing was unloaded
    assert modules.sd_models.model_data.sd_model is model
    with pytest.raises(HostError, match=f"Generating needs an SD1.5 or SDXL checkpoint, and the WebUI has an {family}"):
        host.txt2img(Txt2ImgRequest(prompt="a", width=64, height=64, steps=1))


@pytest.mark.parametrize("model, family", [
    (None, None), (standin_models.FakeInitialModel(), None), (type("StableDiffusion", (), {})(), None),
    (type("StableDiffusionXL", (), {})(), "SDXL"), (type("StableDiffusionXLRefiner", (), {})(), "SDXL"),
    (type("Flux", (), {})(), "Flux"), (type("M", (), {"is_sdxl": False, "is_sd2": True})(), "SD2"),
    (type("M", (), {"is_sd1": True, "is_sdxl": False, "is_sd2": False})(), None)])
def test_model_family_from_flags_and_forge_classes(model, family):
    assert model_family(model) == family


def _checkpoint(path, keys):
    import numpy as np
    from safetensors.numpy import save_file

    save_file({k: np.zeros(1, dtype=np.float16) for k in keys}, str(path))
    return path


SD15_KEYS = ["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
             "model.diffusion_model.input_blocks.0.0.weight"]
FAMILY_FILES = [
    ("sd15", SD15_KEYS, None),
    ("sdxl", ["conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
              "conditioner.embedders.1.model.token_embedding.weight"], "SDXL"),
    ("refiner", ["conditioner.embedders.0.model.token_embedding.weight"], "SDXL"),
    ("sd2", ["cond_stage_model.model.token_embedding.weight", "model.diffusion_model.input_blocks.0.0.weight"], "SD2"),
    ("sd3", ["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"], "SD3"),
    ("flux", ["model.diffusion_model.double_blocks.0.img_attn.qkv.weight"], "Flux"),
]


@pytest.mark.parametrize("name, keys, family", FAMILY_FILES, ids=[f[0] for f in FAMILY_FILES])
def test_a_selected_checkpoint_not_loaded_yet_is_checked_from_its_file(loaded, tmp_path, name, keys, family):
    """Forge holds a ``FakeInitialModel`` (no family flags) until its first generation, and loads a checkpoint
    picked in its menu only at the next one: the selected file's tensor names are checked, so an SD2/SD3/Flux
    checkpoint is refused before training unloads anything, and SD1.5 and SDXL pass (the host reports the family).
    In both WebUIs a selected file that is the loaded model's is judged by the model's flags."""
    from lib_profile.hosts.base import HostError

    flavour, device, modules, log, host = loaded
    path = _checkpoint(tmp_path / f"{name}.safetensors", keys)
    modules.sd_models.select_checkpoint = lambda: type("Info", (), {"filename": str(path)})()
    modules.shared.sd_model = standin_models.FakeInitialModel()
    if family in (None, "SDXL"):
        host.check_model_family("Training")
        assert host.model_family == (family or "SD1.5")
    else:
        with pytest.raises(HostError, match=f"an? {family} checkpoint selected; pick an SD1.5 or SDXL checkpoint"):
            with host.training_slot("task(train)", 4):
                pytest.fail("training started")
        assert not log["unloads"] and not log["trash"]
    # the loaded model's own file: its flags decide (an SD1.5 model loaded from it passes)
    model = type("Model", (), {"sd_checkpoint_info": type("I", (), {"filename": str(path)})()})()
    modules.shared.sd_model = model
    host.check_model_family("Training")
    assert host.model_family == "SD1.5"


def test_unreadable_or_ckpt_checkpoints_are_left_to_the_webui(tmp_path):
    from lib_profile.safetensors_header import checkpoint_file_family as checkpoint_family

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x05\x00not a header")
    pickle = tmp_path / "old.ckpt"
    pickle.write_bytes(b"PK")
    assert checkpoint_family(broken) is None and checkpoint_family(pickle) is None
    assert checkpoint_family(tmp_path / "missing.safetensors") is None
