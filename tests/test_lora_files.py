"""LoRA files that must never fail silently: DoRA, modules matching no layer, another model family, LyCORIS,
and ``<lora:NAME:W>`` tags in a standalone prompt. The case files (tests/data/loras/) were made for the tiny
model; each gives the right picture or the right message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lib_profile.hosts.base import HostError, LoraRef, Txt2ImgRequest

DATA = Path(__file__).resolve().parent / "data" / "loras"
STRONG, DORA, PARTLY, SD2, LOHA = (DATA / f"{n}.safetensors" for n in
                                   ("strong", "strong_dora", "strong_partly_unknown", "sd2_style", "loha"))


@pytest.fixture
def tagged_host(host, monkeypatch):
    """The session's tiny host, looking tags up in tests/data/loras."""
    monkeypatch.setattr(host, "lora_dirs", [DATA])
    return host


def pixels(host, prompt="portrait photo", loras=(), seed=5):
    req = Txt2ImgRequest(prompt=prompt, width=64, height=64, steps=3, sampler="Euler", seed=seed, loras=list(loras))
    res = host.txt2img(req)
    return np.asarray(res.images[0], dtype=np.int16), res


def test_case_files_fit_the_tiny_model(host):
    """The case files are what they say: strong/dora/partly fit the tiny model layer for layer (shapes checked)."""
    from lib_profile.lora import apply
    from lib_profile.lora.family import fits
    from lib_profile.lora.keys import module_table

    table = module_table(host.model.unet, host.model.text_encoder)
    for path in (STRONG, DORA, PARTLY):
        deltas, _ = apply.read_lora(path)
        known = [d for d in deltas if d.module_key in table]
        assert len(known) == 88 and all(fits(d, table[d.module_key].weight.shape) for d in known), path.name
    assert all(d.dora_scale is not None for d in apply.read_lora(DORA)[0])


def test_dora_is_merged_as_a1111_merges_it(host):
    """Each layer's weight under strong_dora at 0.8 equals the hand-computed A1111 1.10 DoRA merge
    (W + m * ((W + s*BA) * dora_scale / ||W + s*BA|| over each input column - W)), and differs from strong's."""
    import torch

    from lib_profile.lora import apply
    from lib_profile.lora.keys import module_table

    table = module_table(host.model.unet, host.model.text_encoder)
    deltas = {d.module_key: d for d in apply.read_lora(DORA)[0]}
    before = {k: table[k].weight.detach().double().numpy().copy() for k in deltas}
    with apply.applied([(str(DORA), 0.8)], host.model.unet, host.model.text_encoder):
        merged = {k: table[k].weight.detach().double().numpy().copy() for k in deltas}
    with apply.applied([(str(STRONG), 0.8)], host.model.unet, host.model.text_encoder):
        plain = {k: table[k].weight.detach().double().numpy().copy() for k in deltas}
    for key, d in deltas.items():
        w0 = before[key].reshape(before[key].shape[0], -1)
        up, down = d.up.double().numpy().reshape(d.up.shape[0], -1), d.down.double().numpy().reshape(d.rank, -1)
        m = w0 + (d.alpha / d.rank) * up @ down
        expected = np.empty_like(w0)
        scale = d.dora_scale.double().numpy().reshape(-1)
        for i in range(m.shape[1]):  # column by column: the norm is over the outputs of input channel i
            norm = np.sqrt(np.sum(m[:, i] ** 2))
            expected[:, i] = w0[:, i] + 0.8 * (m[:, i] * scale / norm - w0[:, i])
        np.testing.assert_allclose(merged[key].reshape(w0.shape), expected, rtol=1e-4, atol=1e-5, err_msg=key)
        assert not np.allclose(merged[key], plain[key], atol=1e-3), key
    after = {k: table[k].weight.detach().double().numpy() for k in deltas}
    assert all(np.array_equal(after[k], before[k]) for k in deltas)  # restored bit for bit
    assert torch.is_tensor(table[next(iter(deltas))].weight)


def test_dora_picture_differs_from_strong(host):
    strong, _ = pixels(host, loras=[LoraRef(str(STRONG), 1.0)])
    dora, _ = pixels(host, loras=[LoraRef(str(DORA), 1.0)])
    plain, _ = pixels(host)
    assert np.abs(strong - plain).max() > 0 and np.abs(dora - strong).max() > 0


def test_partly_unknown_gives_a_note_with_counts(host):
    strong, _ = pixels(host, loras=[LoraRef(str(STRONG), 1.0)])
    partly, res = pixels(host, loras=[LoraRef(str(PARTLY), 1.0)])
    assert np.array_equal(strong, partly)  # the 88 known modules are applied, the 40 others are not
    note = "40 of 128 modules of strong_partly_unknown matched no layer"
    assert any(note in n for n in res.params["lora_notes"])
    assert note in res.infotexts[0]
    report = next(r for r in res.reports if r.part == "LoRA strong_partly_unknown")
    assert note in report.why
    from lib_profile.studio import report as stage_report  # the job's messages come from these notes

    notes = stage_report.notes([{"stages": [stage_report.stage_entry(0, "txt2img", res.reports)]}])
    assert any(note in n for n in notes)
    assert pixels(host, loras=[LoraRef(str(STRONG), 1.0)])[1].params.get("lora_notes") is None


@pytest.mark.parametrize("path, words", [
    (SD2, ["sd2_style is for SD2", "1024-wide", "the model is SD1.5"]),
    (LOHA, ["LyCORIS LoHa", "kohya LoRA and DoRA files only"]),
])
def test_lora_for_another_family_is_refused_before_loading(host, path, words):
    from lib_profile.lora.keys import module_table

    table = module_table(host.model.unet, host.model.text_encoder)
    before = {k: m.weight.detach().clone() for k, m in table.items()}
    with pytest.raises(HostError) as err:
        pixels(host, loras=[LoraRef(str(STRONG), 1.0), LoraRef(str(path), 1.0)])
    assert all(w in str(err.value) for w in words), str(err.value)
    assert all(bool((m.weight == before[k]).all()) for k, m in table.items())  # nothing merged, nothing left


def test_family_check_on_keys_alone():
    """A LoRA whose names match nothing is named by its family where its keys or metadata say it."""
    import torch

    from lib_profile.lora.apply import LoraDelta
    from lib_profile.lora.family import check_fit

    layer = torch.nn.Linear(4, 4)
    table = {"lora_te_x": layer}
    sdxl = [LoraDelta("lora_te2_y", torch.zeros(2, 4), torch.zeros(4, 2), 2.0)]
    with pytest.raises(HostError, match="LoRA x is for SDXL and the checkpoint is SD1.5"):
        check_fit("x", sdxl, table, {}, 768)
    with pytest.raises(HostError, match="LoRA x is for SD2 and the checkpoint is SD1.5"):
        check_fit("x", [LoraDelta("lora_unet_z", torch.zeros(2, 4), torch.zeros(4, 2), 2.0)], table,
                  {"ss_base_model_version": "sd_v2_768_v"}, 768)
    wrong = [LoraDelta("lora_te_x", torch.zeros(2, 5), torch.zeros(4, 2), 2.0)]
    with pytest.raises(HostError, match="1 of 1 modules have other shapes"):
        check_fit("x", wrong, table, {}, 768)
    matched, note = check_fit("x", [LoraDelta("lora_te_x", torch.zeros(2, 4), torch.zeros(4, 2), 2.0)], table, {}, 768)
    assert len(matched) == 1 and note is None


@pytest.mark.parametrize("weight", [0.8, 1.0])
def test_prompt_tag_applies_the_lora_like_the_option(tagged_host, weight):
    option, _ = pixels(tagged_host, loras=[LoraRef(str(STRONG), weight)])
    tag = f"<lora:strong:{weight:g}>" if weight != 1.0 else "<lora:strong>"
    tagged, res = pixels(tagged_host, prompt=f"portrait photo {tag}")
    plain, _ = pixels(tagged_host)
    assert np.array_equal(tagged, option) and not np.array_equal(tagged, plain)
    assert tag in res.infotexts[0] and any(r.part == "LoRA strong" for r in res.reports)
    lyco, _ = pixels(tagged_host, prompt=f"portrait photo <lyco:strong:{weight:g}>")
    assert np.array_equal(lyco, option)


def test_prompt_tag_wins_over_the_same_lora_given_apart(tagged_host):
    option, _ = pixels(tagged_host, loras=[LoraRef(str(STRONG), 0.8)])
    both, _ = pixels(tagged_host, prompt="portrait photo <lora:strong:0.8>", loras=[LoraRef(str(STRONG), 0.3)])
    assert np.array_equal(both, option)


@pytest.mark.parametrize("prompt, words", [
    ("a <lora:nope:0.8>", ["'nope' not found", str(DATA), "loras"]),
    ("a <lora:sd2_style:0.8>", ["is for SD2"]),
    ("a <lora:loha:1>", ["LyCORIS LoHa"]),
    ("a <hypernet:strong:1>", ["hypernet"]),
    ("a <lora:strong:abc>", ["'abc' is not a weight"]),
    ("a <lora:strong:0.5:1>", ["text-encoder and UNet"]),
    ("a <lora:../strong:1>", ["not a path"]),
    ("a <lora:strong:1> <lora:strong:0.5>", ["tagged twice"]),
    ("a <lora:str*:1>", ["not found"]),
])
def test_bad_prompt_tags_are_clear_errors(tagged_host, prompt, words):
    for call in (lambda: pixels(tagged_host, prompt=prompt), lambda: tagged_host.check_prompt_loras(prompt)):
        with pytest.raises(HostError) as err:
            call()
        assert all(w in str(err.value) for w in words), str(err.value)


def test_batch_prompts_with_different_tags_are_refused(tagged_host):
    req = Txt2ImgRequest(prompt="a", prompts=["a <lora:strong:1>", "b"], batch_size=2, width=64, height=64, steps=2, seed=1)
    with pytest.raises(HostError, match="different LoRA tags"):
        tagged_host.txt2img(req)


def test_cli_reports_lora_faults_in_one_line_with_exit_2(tmp_path, capsys):
    from lib_profile.cli import main

    base = ["txt2img", "--checkpoint", "tiny", "--width", "64", "--height", "64", "--steps", "2", "--seed", "1",
            "--device", "cpu", "--out", str(tmp_path / "out")]
    cases = [(["--prompt", "a <lora:sd2_style:1>", "--lora-dir", str(DATA)], "sd2_style is for SD2"),
             (["--prompt", "a", "--lora", f"{SD2}:0.7"], "sd2_style is for SD2"),
             (["--prompt", "a <lora:nope:1>", "--lora-dir", str(DATA)], f"searched ({DATA}"),
             (["--prompt", "a", "--lora-dir", str(tmp_path / "missing")], "no such folder")]
    for extra, words in cases:
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    assert main([*base, "--prompt", "a <lora:strong_partly_unknown:1>", "--lora-dir", str(DATA)]) == 0
    assert "note: 40 of 128 modules of strong_partly_unknown matched no layer" in capsys.readouterr().err


OFF = {s: False for s in ("detail", "refine", "detail2", "upscale", "grade")}


def test_api_refuses_bad_prompt_loras_with_400_and_notes_unmatched_modules_in_the_job(api, studio, monkeypatch):
    from tests.test_api import NAME, SLUG, wait

    monkeypatch.setattr(studio.host, "lora_dirs", [DATA])
    api.post("/identities", json={"name": NAME}).raise_for_status()
    for prompt, words in (("a <lora:sd2_style:1>", "sd2_style is for SD2"), ("a <lora:nope:1>", str(DATA)),
                          ("a <lora:loha:1>", "LyCORIS LoHa")):
        r = api.post(f"/identities/{SLUG}/generate", json={"prompt": prompt, "count": 1, "switches": OFF,
                                                            "settings": {"width": 64, "height": 64, "steps": 2}})
        assert r.status_code == 400 and words in r.json()["detail"], r.text
    r = api.post(f"/identities/{SLUG}/generate", json={"prompt": "a <lora:strong_partly_unknown:1>", "count": 1,
                                                        "switches": OFF, "settings": {"width": 64, "height": 64,
                                                                                      "steps": 2}})
    assert r.status_code == 202, r.text
    job = wait(api, r.json()["id"])
    assert job["state"] == "done", job
    assert any("40 of 128 modules of strong_partly_unknown matched no layer" in m for m in job["messages"]), job


def test_explain_and_edit_say_which_lora_modules_were_not_applied(api, studio, monkeypatch):
    """The unmatched-module note reaches the user on every path that renders a prompt with a LoRA: generate (above),
    explain and edit (their job messages, their JSON, and the infotext of the PNGs they write)."""
    from PIL import Image

    from tests.test_api import NAME, SLUG, wait

    note = "40 of 128 modules of strong_partly_unknown matched no layer"
    monkeypatch.setattr(studio.host, "lora_dirs", [DATA])
    api.post("/identities", json={"name": NAME}).raise_for_status()
    common = {"identity": SLUG, "prompt": "a red car <lora:strong_partly_unknown:1>", "seed": 3,
              "settings": {"width": 64, "height": 64, "steps": 2}}
    ex = wait(api, api.post("/explain", json={**common, "words": ["car"]}).json()["id"])
    assert ex["state"] == "done", ex
    assert any(note in m for m in ex["messages"]) and any(note in n for n in ex["result"]["notes"]), ex
    ed = wait(api, api.post("/edit", json={**common, "mode": "swap", "replace": {"red": "blue"}}).json()["id"])
    assert ed["state"] == "done", ed
    assert any(note in m for m in ed["messages"]) and any(note in n for n in ed["result"]["notes"]), ed
    folder = Path(ed["result"]["folder"])
    assert note in Image.open(folder / "edited.png").text["parameters"]
    assert note in Image.open(Path(ex["result"]["folder"]) / "image.png").text["parameters"]


def test_cli_explain_and_edit_print_the_unmatched_module_note(tmp_path, capsys):
    from lib_profile.cli import main

    note = "note: 40 of 128 modules of strong_partly_unknown matched no layer"
    base = ["--checkpoint", "tiny", "--width", "64", "--height", "64", "--steps", "2", "--seed", "1",
            "--device", "cpu", "--lora-dir", str(DATA), "--prompt", "a red car <lora:strong_partly_unknown:1>"]
    assert main(["explain", *base, "--word", "car", "--out", str(tmp_path / "ex")]) == 0
    assert note in capsys.readouterr().err
    assert main(["edit", *base, "--target", "a blue car <lora:strong_partly_unknown:1>", "--out", str(tmp_path / "ed")]) == 0
    assert note in capsys.readouterr().err
