"""Tones: presets, user presets, and a colour grade that measurably warms or cools."""

import json

import numpy as np
import pytest

from lib_profile.hosts.base import HostError
from lib_profile.studio import tone


def r_minus_b(image):
    a = np.asarray(image, np.float32)
    return float((a[..., 0] - a[..., 2]).mean())


def test_shipped_presets(tmp_path):
    tones = {t.name: t for t in tone.list_tones(tmp_path)}
    assert list(tones)[:3] == ["warm", "cool", "neutral"]
    assert (tones["cool"].sampler, tones["cool"].scheduler) == ("DPM++ 2M", "Karras")
    assert tones["cool"].alternatives == ["Euler a"]
    assert (tones["warm"].sampler, tones["warm"].scheduler) == ("DPM++ SDE", "Karras")
    assert tones["warm"].alternatives == ["Euler"]
    assert "golden" in tones["warm"].prompt and "blue" in tones["cool"].prompt


@pytest.mark.parametrize("photo", ["astronaut", "grace_hopper"])
def test_grade_warms_cools_and_neutral_leaves(photo, request):
    image = request.getfixturevalue(photo)
    base = r_minus_b(image)
    warm = tone.grade_image(image, tone.get_tone("warm"))
    cool = tone.grade_image(image, tone.get_tone("cool"))
    neutral = tone.grade_image(image, tone.get_tone("neutral"), 1.0)
    assert r_minus_b(warm) > base + 5
    assert r_minus_b(cool) < base - 5
    assert np.array_equal(np.asarray(neutral), np.asarray(image))


def test_strength_scales_the_grade(astronaut):
    warm = tone.get_tone("warm")
    shifts = [r_minus_b(tone.grade_image(astronaut, warm, s)) for s in (0.0, 0.3, 0.6, 1.0)]
    assert shifts[0] == pytest.approx(r_minus_b(astronaut), abs=0.01)
    assert shifts == sorted(shifts) and shifts[-1] - shifts[0] > 10
    with pytest.raises(HostError, match="strength"):
        tone.grade_image(astronaut, warm, 1.5)


def test_user_presets_add_and_override(tmp_path, astronaut):
    folder = tmp_path / "tones"
    folder.mkdir()
    (folder / "sunset.json").write_text(json.dumps({
        "name": "sunset", "title": "Sunset", "prompt": "sunset light", "sampler": "Euler", "scheduler": "Automatic",
        "grade": {"temperature": 0.9, "highlights": [0.2, 0.05, -0.1]}, "strength": 0.8}))
    (folder / "cool.json").write_text(json.dumps({"name": "cool", "title": "My cool", "sampler": "Euler a"}))
    tones = {t.name: t for t in tone.list_tones(tmp_path)}
    assert tones["sunset"].source.endswith("sunset.json") and tones["cool"].title == "My cool"
    assert r_minus_b(tone.grade_image(astronaut, tones["sunset"])) > r_minus_b(astronaut) + 10


@pytest.mark.parametrize("bad, message", [
    ({"name": "x", "title": "X", "colour": 1}, "unknown or missing field"),
    ({"name": "x", "title": "X", "sampler": "Fancy"}, "Unknown sampler"),
    ({"name": "x", "title": "X", "strength": 3}, "strength"),
    ({"name": "../x", "title": "X"}, "simple word"),
])
def test_bad_user_presets_are_named(tmp_path, bad, message):
    (tmp_path / "tones").mkdir()
    (tmp_path / "tones" / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(HostError, match=message):
        tone.list_tones(tmp_path)


def test_unknown_tone_lists_the_choices(tmp_path):
    with pytest.raises(HostError, match="warm, cool, neutral"):
        tone.get_tone("sepia", tmp_path)


def test_cli_lists_tones(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run([sys.executable, "-m", "lib_profile", "--data-dir", str(tmp_path), "tones"],
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert [line.split()[0] for line in proc.stdout.splitlines()] == ["warm", "cool", "neutral"]
