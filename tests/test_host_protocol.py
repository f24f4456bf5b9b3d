"""The Host protocol declares every optional capability; a host without one refuses clearly, and nothing in
lib_profile probes a host with hasattr/getattr."""

from __future__ import annotations

import ast
import contextlib
from pathlib import Path

import pytest
from PIL import Image

from lib_profile.hosts.base import FaceDetailRequest, Host, HostError, RunControl, Txt2ImgRequest

ROOT = Path(__file__).resolve().parent.parent


class BareHost(Host):
    """Only the required methods: every optional capability is the protocol's default."""

    name = "bare"

    def txt2img(self, req, control=None):
        raise AssertionError("not reached")

    img2img = inpaint = txt2img

    def upscale(self, image, scale, upscaler="Lanczos", reports=None):
        return image

    def samplers(self):
        return ["Euler a"]

    def upscalers(self):
        return ["Lanczos"]


def face_request():
    return FaceDetailRequest(prompt="x", init_image=Image.new("RGB", (64, 64)))


REFUSALS = [  # (capability, call): each refuses with "... is not supported by the bare host"
    ("ADetailer face detail", lambda h: h.adetailer_detail(face_request())),
    ("checkpoint file", lambda h: h.checkpoint_path()),
    ("checkpoints to train on", lambda h: h.checkpoints()),
    ("attention control", lambda h: h.check_attention_control("Explain")),
]


@pytest.mark.parametrize("call", [c for _n, c in REFUSALS], ids=[n for n, _c in REFUSALS])
def test_a_missing_capability_is_refused_clearly(call):
    with pytest.raises(HostError, match="is not supported by the bare host"):
        call(BareHost())


DEFAULTS = [  # (capability, call, what a host without it answers)
    ("attention_control flag", lambda h: h.attention_control, False),
    ("pads_prompt_to_negative flag", lambda h: h.pads_prompt_to_negative, False),
    ("model_family", lambda h: h.model_family, "SD1.5"),
    ("adetailer_present", lambda h: h.adetailer_present(), False),
    ("adetailer_models", lambda h: h.adetailer_models(), []),
    ("controlnet_model", lambda h: h.controlnet_model("pose"), None),
    ("token_chunks", lambda h: h.token_chunks("a photo"), None),
    ("take_notes", lambda h: h.take_notes(), []),
    ("check_prompt_loras", lambda h: h.check_prompt_loras("a <lora:x:1> photo"), []),
    ("forget_lora", lambda h: h.forget_lora("x"), []),
    ("lora_list_changed", lambda h: h.lora_list_changed(), None),
    ("training_progress", lambda h: h.training_progress(1, 2), None),
    ("hires_upscalers", lambda h: h.hires_upscalers(), ["Lanczos"]),
    ("control", lambda h: h.control() == RunControl(), True),
    ("job", lambda h: isinstance(h.job("t", 1), contextlib.nullcontext), True),
    ("training_slot", lambda h: isinstance(h.training_slot("t", 1), contextlib.nullcontext), True),
]


@pytest.mark.parametrize("call,expected", [(c, e) for _n, c, e in DEFAULTS], ids=[n for n, _c, _e in DEFAULTS])
def test_a_missing_optional_part_has_a_harmless_default(call, expected):
    assert call(BareHost()) == expected


def test_the_core_refuses_attention_features_on_a_host_without_attention_control():
    from lib_profile.attention.explain import explain
    from lib_profile.attention.p2p import Edit, edit_control

    host = BareHost()
    with pytest.raises(HostError, match="Explain.*is not supported by the bare host"):
        explain(host, Txt2ImgRequest(prompt="a photo"), ["photo"])
    with pytest.raises(HostError, match="Prompt-to-Prompt.*is not supported by the bare host"):
        edit_control(host, Edit(source="a photo", target="a cat"), "")


def test_both_hosts_declare_attention_control():
    from lib_profile.hosts.diffusers.host import DiffusersHost
    from lib_profile.hosts.webui.host import WebUIHost

    assert DiffusersHost.attention_control and WebUIHost.attention_control


def host_probes(path: Path) -> list[str]:
    """``hasattr(host, ...)`` / ``getattr(host, ...)`` calls (any first argument named ``host`` or ``*.host``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr") \
                and node.args:
            first = node.args[0]
            name = first.id if isinstance(first, ast.Name) else first.attr if isinstance(first, ast.Attribute) else ""
            if name == "host" or name.endswith("_host"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_no_module_probes_a_host_for_a_capability():
    probes = [p for path in sorted((ROOT / "lib_profile").rglob("*.py")) for p in host_probes(path)]
    assert probes == []
