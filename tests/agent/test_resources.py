"""The agent's /proc sampler, on real processes of this machine."""

import os
import subprocess
import sys
import time

import pytest
from reprolab_agent.resources import Sample, sample_session, usage

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads Linux /proc")


def test_it_sums_memory_and_cpu_over_a_session():
    # The child spins until its own CPU time (not the wall clock) reaches 0.5 s, so a loaded
    # machine only makes it take longer: the condition below is always reached.
    busy = "import time\nx = bytearray(50 * 2**20)\nwhile time.process_time() < 0.5: pass\ninput()"
    child = subprocess.Popen([sys.executable, "-c", busy], stdin=subprocess.PIPE, start_new_session=True, text=True)
    try:
        sample = sample_session(child.pid)
        deadline = time.monotonic() + 120
        while not (sample and sample.rss_bytes > 50 * 2**20 and sample.cpu_seconds > 0.3):
            assert time.monotonic() < deadline, f"the child never showed its memory and CPU: {sample}"
            time.sleep(0.02)  # poll the condition
            sample = sample_session(child.pid)
        assert sample.processes == 1
    finally:
        child.communicate("\n", timeout=10)


def test_a_session_with_no_processes_is_empty():
    sample = sample_session(2**22 + 12345)  # no session has this id
    assert sample == Sample(processes=0, rss_bytes=0, cpu_seconds=0.0)


def test_usage_reports_cpu_share_since_the_previous_sample():
    before = Sample(processes=2, rss_bytes=100 * 2**20, cpu_seconds=1.0)
    after = Sample(processes=2, rss_bytes=150 * 2**20, cpu_seconds=2.5)
    assert usage(before, after, 2.0) == {"processes": 2, "rss_mb": 150.0, "cpu_percent": 75.0}
