"""bench/cluster.py's quick mode runs end to end on a real PostgreSQL (its job kinds exist in the bench only)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_cluster_bench_runs_in_quick_mode(pg_url, tiny_dir):
    out = subprocess.run([sys.executable, "bench/cluster.py", "--quick", "--url", pg_url, "--model", str(tiny_dir)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"ratio 2/1 : \d+\.\d\dx", out.stdout), out.stdout
    for line in ("cluster, 4 workers", "embedded (SQLite)"):
        assert re.search(re.escape(line) + r" +: +\d+\.\d jobs/s .*median claim latency +\d+\.\d ms",
                         out.stdout), out.stdout


def test_the_bench_job_kinds_cannot_be_sent_to_a_studio(tmp_path):
    import pytest

    from lib_profile.hosts.base import HostError
    from lib_profile.service import Studio

    studio = Studio(object(), tmp_path)
    try:
        assert not [k for k in studio.jobs.handlers if k.startswith("bench")]
        for kind in ("bench_tiny", "bench_empty"):
            with pytest.raises(HostError, match="Unknown job kind"):
                studio.jobs.submit(kind, None, {})
    finally:
        studio.close()
