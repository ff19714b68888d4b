"""A short bounded load test in CI: the kiosk under 2x its measured capacity (benchmarks/load_test.py's code).

The full 60 s run with figures lives in benchmarks/results/load_test.md; this one runs a few
seconds on the tiny artifact and asserts the same properties: no crash, overload answered
503 (never a connection error or another 5xx), every admitted request within the deadline,
memory flat.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from test_runtime_fixtures import build_tiny_artifact  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="RSS is read from /proc")


def test_overload_is_shed_with_503_and_memory_stays_flat(tmp_path: Path) -> None:
    import httpx
    import load_test as lt

    folder = build_tiny_artifact(tmp_path / "tiny")
    reqs = [lt.encode_request("127.0.0.1", img, q) for img, q in lt.make_requests(4)]
    deadline_ms = 1500
    k = lt.Kiosk(str(folder), threads=1, max_batch=8, queue_size=4, deadline_ms=deadline_ms)
    try:
        k.wait_ready(60)
        cap = asyncio.run(lt.closed_loop(k.port, reqs, 4, 2.0))
        assert cap["ok"] > 0 and cap["other"] == 0, cap
        rss_before = lt.rss_mb(k.proc.pid)
        over = asyncio.run(lt.open_loop(k.port, reqs, min(400.0, 2 * cap["throughput_rps"]), 4.0, deadline_ms / 1000))
        time.sleep(0.5)
        rss_after = lt.rss_mb(k.proc.pid)
        assert k.proc.poll() is None, "kiosk crashed"
        assert httpx.get(k.url + "/readyz", timeout=5).status_code == 200
        stats = httpx.get(k.url + "/api/stats", timeout=5).json()
    finally:
        k.stop()
    statuses = over["status"]
    assert set(s.split()[0] for s in statuses) <= {"200", "503"}, statuses
    assert any(s.startswith("503") for s in statuses), (cap, over)
    assert over["ok"] > 0 and over["over_deadline"] == 0, over
    assert stats["failed"] == 0 and stats["rejected_full"] > 0
    assert rss_after - rss_before < max(20.0, 0.1 * rss_before), (rss_before, rss_after)
