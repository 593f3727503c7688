"""The run's peak memory: PSS of real processes, read only when RSS says a new peak can be there."""

from __future__ import annotations

import subprocess
import sys
import time

from flcli.memory import PeakMemory, process_kind, pss_mb, rss_kb

GROW = (
    "import sys, time; time.sleep(0.6); b = bytearray(150 * 2**20); "
    "sys.stdout.write('grown\\n'); sys.stdout.flush(); time.sleep(30)"
)


def test_a_child_that_grows_raises_the_peak_and_a_steady_one_is_not_read_again():
    child = subprocess.Popen([sys.executable, "-c", GROW], stdout=subprocess.PIPE, text=True)
    try:
        mem = PeakMemory(lambda: [child.pid], interval=0.1)
        mem.sample(force=True)
        before = mem.peak_pss_mb
        assert child.stdout.readline() == "grown\n"
        mem.sample()  # RSS is 150 MB higher: PSS is read
        assert mem.peak_pss_mb > before + 140
        readings = mem.pss_readings
        for _ in range(5):  # nothing grows: RSS is enough
            mem.sample()
        assert mem.pss_readings == readings
        assert rss_kb({child.pid}) / 1024 >= pss_mb({child.pid}) - 1  # RSS bounds PSS from above
    finally:
        child.kill()
        child.wait()


def test_the_sampling_thread_keeps_a_peak_of_a_process_that_has_exited():
    child = subprocess.Popen([sys.executable, "-c", GROW], stdout=subprocess.PIPE, text=True)
    with PeakMemory(lambda: [child.pid], interval=0.05) as mem:
        assert child.stdout.readline() == "grown\n"
        time.sleep(0.3)
        child.kill()
        child.wait()
        time.sleep(0.2)
    assert mem.peak_pss_mb > 140 and mem.as_dict()["pss_readings"] >= 2


def test_the_peak_says_which_kinds_of_process_held_it():
    child = subprocess.Popen([sys.executable, "-c", GROW], stdout=subprocess.PIPE, text=True)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        mem = PeakMemory(lambda: [child.pid, sleeper.pid], interval=0.1)
        assert child.stdout.readline() == "grown\n"
        mem.sample(force=True)
        at_peak = mem.as_dict()["at_peak"]
        assert list(at_peak) == ["python -c", "sleep"]  # largest first
        assert at_peak["python -c"]["processes"] == 1 and at_peak["python -c"]["pss_mb"] > 140
        assert abs(sum(g["pss_mb"] for g in at_peak.values()) - mem.peak_pss_mb) < 0.5
        assert process_kind(1 << 30) == "exited"
    finally:
        for proc in (child, sleeper):
            proc.kill()
            proc.wait()
