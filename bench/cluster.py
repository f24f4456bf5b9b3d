"""The cluster mode's scaling and its own cost, side by side in one run (docs/cluster.md, docs/benchmarks.md).

1. The same batch of tiny-model generations (``DiffusersHost.txt2img``, the tiny model, 64 px) through 1 and then
   2 worker processes on one PostgreSQL queue, torch held to one thread in each worker: jobs per second of each,
   and the ratio (2 workers / 1 worker; the ideal on two free cores is 2.0). Beside each: the cores the workers
   used (their CPU seconds over the run's wall time), the cores the rest of the machine used (PostgreSQL, this
   submitter, anything else running) and the idle ones (``/proc``), and the jobs per worker CPU-second: on a
   machine whose cores the workers share with the database and the submitter, that last figure shows whether the
   queue itself loses throughput (it would fall with 2 workers) or the workers only lack cores.
2. The engine's own cost: empty jobs (the handler returns at once) through 4 worker processes against the embedded
   queue (``JobManager`` on SQLite, one worker thread), submitted in one burst from one thread: jobs per second
   (first submit to last end); then jobs one at a time on an idle queue: the median claim latency (submit -> the
   handler's first line), from the row's ``created`` and the time the handler returns as its result.

The job kinds here (``bench_tiny``, ``bench_empty``) exist only in this script's handler tables: no Studio, API
route or CLI can send them. It starts its own PostgreSQL (``tests/pg_server.py``, i.e. ``.ci/postgres``) unless
given ``--url``.

    .venv/bin/python bench/cluster.py            # 16 generations, 1000 empty jobs, 100 one at a time
    .venv/bin/python bench/cluster.py --quick    # a smoke run (seconds): 2 generations, 40 + 10 empty jobs
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WAIT = 600  # seconds: a bound on a hung run


# -- worker processes
def _worker(url: str, kind: str, model: str, steps: int) -> None:
    """A worker process: one ClusterJobManager running ``kind`` jobs; says ``ready`` once its model is loaded and
    runs until its stdin closes."""
    from lib_profile.jobs.cluster import ClusterJobManager

    if kind == "bench_tiny":
        import torch

        from lib_profile.hosts.base import Txt2ImgRequest
        from lib_profile.hosts.diffusers.host import DiffusersHost

        torch.set_num_threads(1)
        host = DiffusersHost(Path(model), device="cpu", data_dir=Path(tempfile.mkdtemp(prefix="bench-cluster-")))
        req = Txt2ImgRequest(prompt="studio portrait photo of a person", width=64, height=64, steps=steps, seed=1)
        host.txt2img(req)  # warm-up: the first call pays for lazy set-up

        def handler(ctx):
            t = time.time()
            host.txt2img(req)
            return {"t": t}
    else:
        def handler(ctx):
            return {"t": time.time()}
    manager = ClusterJobManager(url, {kind: handler}, worker=True)
    print("ready", flush=True)
    sys.stdin.read()
    manager.shutdown()
    manager.db.close()


def _start_workers(url: str, kind: str, count: int, model: str = "", steps: int = 0) -> list[subprocess.Popen]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    procs = [subprocess.Popen([sys.executable, __file__, "worker", url, kind, model, str(steps)], cwd=ROOT, env=env,
                              text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(count)]
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise SystemExit("a worker process failed to start")
    return procs


def _stop_workers(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.stdin.close()
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()


# -- measurements
def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far (Linux ``/proc/PID/stat``, fields 14-15)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


def machine_busy() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine so far (``/proc/stat``'s ``cpu`` line; idle and iowait are not
    busy)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - values[3] - values[4]) / tick, sum(values) / tick


def burst(manager, kind: str, count: int) -> tuple[float, float]:
    """Submit ``count`` jobs at once, wait for all: (jobs per second from the first submit to the last end,
    submits per second)."""
    t0 = time.time()
    ids = [manager.submit(kind, "bench", {})["id"] for _ in range(count)]
    submitted = time.time()
    jobs = [manager.wait(i, WAIT) for i in ids]
    bad = [j for j in jobs if j["state"] != "done"]
    if bad:
        raise SystemExit(f"{len(bad)} jobs did not end done: {bad[0]}")
    return count / (max(j["finished"] for j in jobs) - t0), count / (submitted - t0)


def claim_latency(manager, kind: str, count: int) -> float:
    """Median seconds from submit (the row's ``created``) to the handler's start, one job at a time."""
    lat = []
    for _ in range(count):
        job = manager.wait(manager.submit(kind, "bench", {})["id"], WAIT)
        lat.append(job["result"]["t"] - job["created"])
    return statistics.median(lat)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        _worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a smoke run: few jobs, 2 steps")
    ap.add_argument("--url", help="a PostgreSQL database to use (default: start a throwaway server)")
    ap.add_argument("--model", help="the tiny model's folder (default: build it into a temporary folder)")
    ap.add_argument("--generations", type=int, default=16, help="tiny-model jobs per run (default 16)")
    ap.add_argument("--steps", type=int, default=10, help="sampling steps per generation (default 10)")
    ap.add_argument("--empty", type=int, default=1000, help="empty jobs in the burst (default 1000)")
    ap.add_argument("--latency-jobs", type=int, default=100, help="empty jobs one at a time (default 100)")
    args = ap.parse_args()
    if args.quick:
        args.generations, args.steps, args.empty, args.latency_jobs = 2, 2, 40, 10

    from lib_profile.hosts.diffusers import tiny
    from lib_profile.jobs.cluster import ClusterJobManager
    from lib_profile.jobs.db import JobDB
    from lib_profile.jobs.manager import JobManager

    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    server = None
    if args.url:
        url = args.url
    else:
        from tests.pg_server import Server, have_binaries

        if not have_binaries():
            raise SystemExit("PostgreSQL server binaries are missing (apt-get install postgresql)")
        server = Server()
        url = server.url
    try:
        model = Path(args.model) if args.model else tiny.ensure_tiny(work / "cache")
        front = ClusterJobManager(url, {"bench_tiny": None, "bench_empty": None}, worker=False)
        try:
            rates, cores = {}, {}
            for n in (1, 2):
                procs = _start_workers(url, "bench_tiny", n, str(model / tiny.CHECKPOINT), args.steps)
                try:
                    pids = [p.pid for p in procs]
                    cpu0, (busy0, all0), t0 = cpu_seconds(pids), machine_busy(), time.time()
                    rates[n] = burst(front, "bench_tiny", args.generations)[0]
                    wall, (busy1, all1) = time.time() - t0, machine_busy()
                    # cores: the workers' own, the rest of the machine's (PostgreSQL, this submitter, others), idle
                    workers = (cpu_seconds(pids) - cpu0) / wall
                    machine = (all1 - all0) / wall
                    cores[n] = (workers, (busy1 - busy0) / wall - workers, machine - (busy1 - busy0) / wall)
                finally:
                    _stop_workers(procs)
            procs = _start_workers(url, "bench_empty", 4)
            try:
                cluster_rate, cluster_submit = burst(front, "bench_empty", args.empty)
                cluster_lat = claim_latency(front, "bench_empty", args.latency_jobs)
            finally:
                _stop_workers(procs)
        finally:
            front.shutdown()
            front.db.close()
        embedded = JobManager(JobDB(work / "jobs.sqlite3"), {"bench_empty": lambda ctx: {"t": time.time()}})
        try:
            embedded_rate, embedded_submit = burst(embedded, "bench_empty", args.empty)
            embedded_lat = claim_latency(embedded, "bench_empty", args.latency_jobs)
        finally:
            embedded.shutdown()
    finally:
        if server is not None:
            server.remove()

    print(f"tiny-model generations (64 px, {args.steps} steps, torch 1 thread a worker), {args.generations} a run:")
    for n in (1, 2):
        workers, others, idle = cores[n]
        print(f"  {n} worker{'s' if n > 1 else ' '} : {rates[n]:.3f} jobs/s; cores used by the workers {workers:.2f}, "
              f"by the rest of the machine {others:.2f}, idle {idle:.2f}; {rates[n] / workers:.3f} jobs per "
              "worker CPU-second")
    print(f"  ratio 2/1 : {rates[2] / rates[1]:.2f}x (per worker CPU-second: "
          f"{(rates[2] / cores[2][0]) / (rates[1] / cores[1][0]):.2f}x)")
    print(f"empty jobs: {args.empty} in one burst; claim latency over {args.latency_jobs} one at a time:")
    print(f"  cluster, 4 workers : {cluster_rate:8.1f} jobs/s (submitted at {cluster_submit:.0f}/s), "
          f"median claim latency {cluster_lat * 1000:7.1f} ms")
    print(f"  embedded (SQLite)  : {embedded_rate:8.1f} jobs/s (submitted at {embedded_submit:.0f}/s), "
          f"median claim latency {embedded_lat * 1000:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
