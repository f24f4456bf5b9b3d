"""The trainer process: one per run folder (a lock), dies with its parent, and a restart ends or waits out
an orphan before resuming - never two writers on one run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lib_profile.train import parent as parent_process
from lib_profile.train.runlock import LOCK_NAME, LOCKED, RunLock, RunLocked, holder
from lib_profile.train.trainer import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parent.parent
LONG = ["--steps", "100000", "--resolution", "64", "--batch-size", "1", "--log-every", "1",
        "--validation-images", "0", "--validate-every", "100000", "--save-every", "100000", "--device", "cpu"]


def alive(pid: int) -> bool:
    """Running (a zombie left for a reaper that does not reap counts as gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return False


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


# ------------------------------------------------------------------ the run folder's lock

def test_the_lock_is_held_for_the_trainers_life_and_dropped_however_it_ends(tmp_path):
    run = tmp_path / "run"
    assert holder(run) is None
    with RunLock(run):
        assert holder(run) == os.getpid()
        with pytest.raises(RunLocked, match="already writing"):
            RunLock(run).acquire()
    assert holder(run) is None and (run / LOCK_NAME).is_file()  # a stale file blocks nothing
    killed = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from lib_profile.train.runlock import RunLock
        RunLock({str(run)!r}).acquire(); print("held", flush=True); time.sleep(600)""")],
        stdout=subprocess.PIPE, text=True)
    assert killed.stdout.readline().strip() == "held"
    assert holder(run) == killed.pid
    killed.kill()
    killed.wait()
    assert holder(run) is None  # the OS dropped it with the process


@pytest.mark.parametrize("resume", [False, True], ids=["fresh", "resume"])
def test_a_second_trainer_on_a_run_folder_is_refused_and_touches_nothing(intake_dir, tiny_checkpoint, tmp_path,
                                                                          resume):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step-000010.safetensors").write_bytes(b"the first trainer's")
    with RunLock(run):
        trainer = Trainer(intake_dir, tiny_checkpoint, run, TrainConfig(name="anna", steps=2, resolution=64,
                                                                        batch_size=1, validation_images=0,
                                                                        device="cpu"))
        with pytest.raises(RunLocked, match=f"pid {os.getpid()}"):
            trainer.run(resume=resume)
    assert (run / "checkpoints" / "step-000010.safetensors").read_bytes() == b"the first trainer's"


def test_the_train_command_refused_by_the_lock_says_so_with_its_own_exit_code(intake_dir, tmp_path, data_dir):
    run = tmp_path / "run"
    events = run / "events.jsonl"
    with RunLock(run):
        events.write_text("")
        done = subprocess.run([sys.executable, "-m", "lib_profile", "train", str(intake_dir), "--checkpoint", "tiny",
                               "--name", "anna", "--out", str(run), "--events", str(events), *LONG],
                              cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, PROFILE_STUDIO_DIR=str(data_dir)))
    assert done.returncode == LOCKED, done.stderr
    assert "Another trainer" in done.stderr and "already writing" in done.stderr
    assert events.read_text() == ""  # the other trainer's events are left alone


# ------------------------------------------------------------------ dies with its parent

PARENT = """
import sys, time
sys.path.insert(0, {root!r})
from lib_profile.train import launch
log = open({log!r}, "ab")
proc = launch.spawn(["train", {intake!r}, "--checkpoint", "tiny", "--name", "anna", "--out", {out!r},
                     "--events", {events!r}, *{long!r}], log, {data!r})
print(proc.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("death_signal", [True, False], ids=["prctl", "watchdog"])
def test_the_trainer_dies_with_the_process_that_started_it(intake_dir, tmp_path, data_dir, death_signal):
    if not sys.platform.startswith("linux"):
        pytest.skip("kills a parent and reads /proc")
    out, events = tmp_path / "run", tmp_path / "run" / "events.jsonl"
    out.mkdir()
    script = PARENT.format(root=str(ROOT), log=str(tmp_path / "train.log"), intake=str(intake_dir), out=str(out),
                           events=str(events), long=LONG, data=str(data_dir))
    env = dict(os.environ, PROFILE_STUDIO_DIR=str(data_dir))
    if not death_signal:  # the portable fallback alone: the watchdog thread
        env["PROFILE_STUDIO_NO_PDEATHSIG"] = "1"
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    trainer = int(parent.stdout.readline())
    try:
        wait_for(lambda: events.is_file() and '"event": "step"' in events.read_text(), 240, "the trainer never trained")
        parent.kill()  # SIGKILL: the parent gets no chance to clean up
        parent.wait()
        wait_for(lambda: not alive(trainer), 120, "the trainer outlived its parent")
    finally:
        if alive(trainer):
            os.kill(trainer, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
    assert '"phase": "cancelled"' in events.read_text()  # stopped as a cancel does: resumable
    assert (out / "state" / "state.pt").is_file() and holder(out) is None


def test_the_watchdog_stops_when_the_parent_is_gone(monkeypatch):
    stopped = []
    monkeypatch.setattr(parent_process, "set_death_signal", lambda: False)
    parent_process.watch_parent(os.getppid() + 999_999, stop=lambda: stopped.append("at once"))  # not our parent: gone already
    assert stopped == ["at once"]
    flips = iter([True, True, False])
    monkeypatch.setattr(parent_process, "parent_alive", lambda pid: next(flips))
    done = __import__("threading").Event()
    parent_process.watch_parent(os.getppid(), stop=lambda: (stopped.append("later"), done.set()), poll_s=0.01)
    assert done.wait(30) and stopped == ["at once", "later"]
    parent_process.watch_parent(None, stop=lambda: stopped.append("never"))
    assert stopped == ["at once", "later"]
