"""What the side-by-side benchmarks share: the model folder and the interleaved, synchronised timing."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable


def model_folder(work: Path, full_size: bool, diffusers_copy: bool = False, layout: bool = False) -> Path:
    """The tiny model (built once into ``work/cache``), random weights at real SD1.5 shape (``full_size``), or
    (``layout``) SD1.5's exact layer layout - 4 levels, 16 transformer blocks, 8 heads, 2 resnets a level - at
    narrow widths. The last runs the same operations a step as SD1.5, each one tiny: on a CPU its time is the
    per-operation dispatch and Python, the regime of a real SD1.5 generation on a fast GPU (which is bound by
    launches: on an H100 a batch of 2 took 1.05x a batch of 1)."""
    from lib_profile.hosts.diffusers import tiny

    if not (full_size or layout):
        return tiny.ensure_tiny(work / "cache")
    configs = tiny.full_size_configs()
    if layout:
        configs["unet"].update(block_out_channels=[32, 64, 64, 64], cross_attention_dim=32)
        configs["vae"], configs["text_encoder"] = tiny.tiny_configs()["vae"], tiny.tiny_configs()["text_encoder"]
    folder = work / ("layout" if layout else "full")
    folder.mkdir(exist_ok=True)
    tiny.build_into(folder, configs, diffusers_copy=diffusers_copy)
    return folder


def median_times(runs: dict[str, Callable[[], object]], repeats: int, device: str) -> dict[str, float]:
    """Median seconds of each run: one warm-up each, then ``repeats`` rounds taking the runs in turn (so drift
    hits all alike), with the GPU synchronised around every timing."""
    import torch

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():
        fn()
    for _ in range(repeats):
        for name, fn in runs.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


# aten operations that only make a new view or an empty tensor: they cost CPU time, but launch no GPU work
_METADATA_OPS = {
    "aten::" + name for name in (
        "view", "_unsafe_view", "reshape", "_reshape_alias", "as_strided", "select", "slice", "narrow", "transpose",
        "t", "permute", "expand", "unsqueeze", "squeeze", "alias", "detach", "lift_fresh", "resolve_conj",
        "resolve_neg", "empty", "empty_strided", "empty_like", "to", "contiguous", "split", "chunk", "unbind",
        "view_as", "expand_as", "flatten", "unflatten", "result_type", "is_nonzero", "item",
        "_local_scalar_dense")
}


def op_counts(runs: dict[str, Callable[[], object]]) -> dict[str, tuple[int, int]]:
    """``(all aten ops, ops that do work)`` of one call of each run (after a warm-up call), from the torch
    profiler's CPU events. An op "does work" when it is not a view or an empty tensor and calls no other op
    that does: a stand-in for a GPU's kernel launches, which a small-batch generation there is bound by."""
    import torch

    out = {}
    for name, fn in runs.items():
        fn()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            fn()
        aten = [e for e in prof.events() if e.name.startswith("aten::")]
        memo: dict = {}
        out[name] = (len(aten), sum(1 for e in aten if _does_work(e, memo)))
    return out


def _work_below(event, memo: dict) -> bool:
    """Whether some aten op under ``event`` does work."""
    key = id(event)
    if key not in memo:
        memo[key] = any(_does_work(c, memo) or _work_below(c, memo) for c in event.cpu_children)
    return memo[key]


def _does_work(event, memo: dict) -> bool:
    return (event.name.startswith("aten::") and event.name not in _METADATA_OPS
            and not _work_below(event, memo))
