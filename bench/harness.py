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
    from lib_profile.hosts import tiny

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
