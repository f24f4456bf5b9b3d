"""Progress that tells the truth: training from its first step with an ETA that counts down, a plan's bar through
every pass (tiles included), WebUI passes that report their steps and stop on cancel within a step."""

from __future__ import annotations

import json
import threading
import time

import pytest

from lib_profile.hosts.base import Interrupted, RunControl, Txt2ImgRequest
from lib_profile.studio.plan import build_plan
from lib_profile.studio.progress import PlanProgress, passes_before
from lib_profile.studio.run import count_passes
from lib_profile.train.progress import SPAN, START, TrainingProgress


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def write(path, *events):
    with open(path, "a", encoding="utf-8") as f:
        for ev in events:
            f.write(json.dumps(ev) + "\n")


def test_training_progress_moves_from_the_first_step_and_its_eta_counts_down(tmp_path):
    events, clock, seen, bar = tmp_path / "events.jsonl", Clock(), [], []
    reader = TrainingProgress(events, 100, lambda **kw: seen.append(kw), lambda *a: bar.append(a), clock)
    reader.poll()  # no file yet: nothing happens
    write(events, {"event": "phase", "phase": "load"}, {"event": "phase", "phase": "train", "step": 0})
    reader.poll()
    assert [kw["stage"] for kw in seen] == ["load", "train"]  # the API's stage names
    write(events, {"event": "tick", "step": 1})
    reader.poll()
    assert seen[-1] == {"stage": "train", "progress": pytest.approx(START + SPAN / 100)}  # no rate yet: no ETA
    clock.now += 10
    write(events, {"event": "tick", "step": 11})  # 1 step a second
    reader.poll()
    assert seen[-1] == {"eta_s": pytest.approx(89.0)} and seen[-2]["progress"] == pytest.approx(START + SPAN * 0.11)
    clock.now += 5  # no event for 5 s: the ETA still counts down
    reader.poll()
    assert seen[-1] == {"eta_s": pytest.approx(84.0)}
    assert bar[-1] == (11, 100, "Profile Studio: training step 11 of 100")  # the WebUI's own bar moves too
    write(events, {"event": "phase", "phase": "error", "message": "CUDA out of memory"})
    reader.poll()
    assert reader.error == "CUDA out of memory"


def test_a_half_written_event_line_waits_for_its_end(tmp_path):
    events, seen = tmp_path / "events.jsonl", []
    reader = TrainingProgress(events, 10, lambda **kw: seen.append(kw), clock=Clock())
    events.write_text('{"event": "tick", "st', "utf-8")
    reader.poll()
    assert seen == []
    with open(events, "a", encoding="utf-8") as f:
        f.write('ep": 4}\n')
    reader.poll()
    assert seen[-1]["progress"] == pytest.approx(START + SPAN * 0.4)


@pytest.mark.parametrize("switches", [None, {"upscale": False}, {"refine": False, "detail": False}])
def test_a_plans_progress_walks_every_pass_once(switches):
    """Fed every stage and every sampling step of a plan in order, the bar rises monotonically to 1 and each pass
    (an upscale tile, a refine) counts once; the ETA shrinks as time passes at a steady rate."""
    plan = build_plan("portrait", None, None, "cool", count=2, seed=1, switches=switches, width=256, height=384,
                      steps=4)
    clock, seen = Clock(), []
    progress = PlanProgress(plan, lambda f, eta: seen.append((f, eta)), clock)
    per_image = count_passes(plan) // plan.count
    for n in range(plan.count):
        for index, stage in plan.enabled():
            progress.stage(n, index, stage.kind)
            passes = (count_passes(plan, through=index) - count_passes(plan, through=index - 1)) // plan.count \
                if index else count_passes(plan, through=0) // plan.count
            for _pass in range(passes):
                for step in range(1, 5):
                    clock.now += 1
                    progress.step(step, 4)
        assert passes_before(plan, n + 1, 0) == (n + 1) * per_image
    fractions = [f for f, _eta in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    etas = [eta for _f, eta in seen if eta is not None]
    assert etas[-1] == pytest.approx(0.0) and etas[len(etas) // 2] > etas[-1]


# ------------------------------------------------------------------ a WebUI pass: steps and cancel

try:
    from standins import webui as standin
except ImportError:
    from tests.standins import webui as standin


@pytest.fixture(params=["a1111", "forge"])
def webui(tmp_path, request):
    from lib_profile.hosts.webui.flavours import detect_flavour
    from lib_profile.hosts.webui.host import WebUIHost

    with standin.installed(tmp_path / "webui", flavour=request.param, cn_models=[]) as m:
        yield m, WebUIHost(detect_flavour())


def test_a_webui_pass_reports_its_steps(webui):
    modules, host = webui
    modules.processing.on_step = lambda p, step: time.sleep(0.3)
    steps = []
    host.txt2img(Txt2ImgRequest(prompt="x", seed=1, steps=4), RunControl(on_step=lambda s, n: steps.append((s, n))))
    assert steps[-1] == (4, 4) and len(steps) >= 3 and steps == sorted(steps)


def test_a_cancel_stops_a_webui_pass_within_a_step(webui):
    modules, host = webui
    cancelled = threading.Event()
    seen = []

    def slow(p, step):
        seen.append(step)
        if step == 2:
            cancelled.set()
        time.sleep(0.3)

    modules.processing.on_step = slow
    with pytest.raises(Interrupted):
        host.txt2img(Txt2ImgRequest(prompt="x", seed=1, steps=20), RunControl(should_interrupt=cancelled.is_set))
    assert max(seen) <= 4


# ------------------------------------------------------------------ a training job moves the WebUI's own bar

try:
    from standins import models as standin_models
except ImportError:
    from tests.standins import models as standin_models


def test_a_training_job_moves_the_webuis_progress_bar_from_0_to_1(tmp_path, tiny_checkpoint, flavour="a1111"):
    """What ``/internal/progress`` answers for the job's task id (the stand-in computes it as the WebUI does from
    ``shared.state``), read at every progress update the job makes, moves from 0 to 1, also when a UI action
    elsewhere resets the WebUI's job fields meanwhile; afterwards the task is completed and the sampling fields
    are cleared. One flavour: the mapping is the same code for both (their ``training_slot`` memory handling is
    in test_webui_training_memory.py)."""
    from lib_profile import sample_photos
    from lib_profile.hosts.webui.flavours import detect_flavour
    from lib_profile.hosts.webui.host import WebUIHost
    from lib_profile.service import Studio

    with standin.installed(tmp_path / "webui", flavour=flavour, cn_models=[]) as modules:
        standin_models.install(flavour, "cpu")
        import sys
        import types

        # the checkpoint to train on is one the WebUI lists (a request never names a file by path)
        info = types.SimpleNamespace(filename=str(tiny_checkpoint), name=tiny_checkpoint.name,
                                     model_name=tiny_checkpoint.stem, title=f"{tiny_checkpoint.name} [0000000000]")
        sys.modules["modules.sd_models"].checkpoints_list = {info.title: info}
        host = WebUIHost(detect_flavour())
        seen = []
        shown = host.training_progress
        meddled = []

        def training_progress(step, steps, text=""):
            if step >= 1 and not meddled:  # a UI action elsewhere in the WebUI ends meanwhile (docs/webui-hosts.md, "Queue lock and gradio wrappers")
                meddled.append(modules.call_queue.wrap_gradio_call(lambda: ["refreshed"])())
            shown(step, steps, text)
            seen.append(modules.progress.progressapi(task)["progress"])

        host.training_progress = training_progress
        studio = Studio(host, tmp_path / "data", lora_root=tmp_path / "webui" / "models" / "Lora" / "ps",
                        outputs_root=tmp_path / "webui" / "outputs")
        try:
            studio.create_identity("Anna")
            studio.add_photos("anna", [(f"{n}.jpg", _jpeg(im)) for n, im in sample_photos.selfies()[:6]])
            job = studio.train("anna", {"steps": 8, "resolution": 64, "batch_size": 1, "validation_images": 0,
                                        "save_every": 4, "log_every": 1, "select": "last", "device": "cpu"},
                               checkpoint=tiny_checkpoint.name)
            task = f"task(profile-studio-{job['id']})"
            done = studio.jobs.wait(job["id"], timeout=600)
        finally:
            studio.close()
        assert done["state"] == "done", done
        assert meddled and seen and seen[0] == 0 and seen[-1] == 1, seen
        assert seen == sorted(seen)  # never backwards
        after = modules.progress.progressapi(task)
        assert after["completed"] and not after["active"]
        state = modules.shared.state
        assert state.job_count == 0 and state.sampling_step == 0 and state.log[-1][0] == "end"


def _jpeg(image) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=92)
    return buf.getvalue()
