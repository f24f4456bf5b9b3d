"""What the side-by-side benchmarks share: the model folder and the interleaved, synchronised timing."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable


def model_folder(work: Path, full_size: bool, diffusers_copy: bool = False) -> Path:
    """The tiny model (built once into ``work/cache``), or random weights at real SD1.5 shape."""
    from lib_profile.hosts import tiny

    if not full_size:
        return tiny.ensure_tiny(work / "cache")
    folder = work / "full"
    folder.mkdir(exist_ok=True)
    tiny.build_into(folder, tiny.full_size_configs(), diffusers_copy=diffusers_copy)
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
