"""Thread count against busy cores: llama.cpp's threads wait for each other at every step."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from app.core.hardware import suggested_threads, threads_for


def test_busy_cores_are_left_to_their_programs():
    assert threads_for(2, [3.0, 5.0]) == 2
    assert threads_for(2, [97.0, 4.0]) == 1
    assert threads_for(2, [97.0, 99.0]) == 1  # never zero
    assert threads_for(8, [90.0, 95.0] + [2.0] * 14) == 7  # 16 logical CPUs over 8 cores
    assert threads_for(4, [100.0] * 4) == 1


@pytest.mark.skipif((psutil.cpu_count(logical=False) or 1) < 2, reason="needs two cores")
def test_a_competing_load_takes_its_cores_out_of_the_count():
    physical = psutil.cpu_count(logical=False) or 1
    logical = psutil.cpu_count() or physical
    # every logical CPU but one kept busy by another program
    spin = "import time\nt = time.time() + 20\nwhile time.time() < t: pass"
    hogs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(logical - 1)]
    try:
        assert suggested_threads(sample_s=1.0) < physical
    finally:
        for h in hogs:
            h.kill()
            h.wait(10)
