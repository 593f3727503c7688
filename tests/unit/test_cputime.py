"""The run's processor accounting counts a busy process's time, its children's too, and once."""

from __future__ import annotations

import subprocess
import sys
import time

from flcli import cputime

BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def test_a_busy_tree_is_counted_once_alive_or_reaped():
    code = (
        BUSY.format(s=0.4)
        + "import subprocess, sys\nsubprocess.run([sys.executable, '-c', "
        + repr(BUSY.format(s=0.4))
        + "])\n"
        + BUSY.format(s=0.01)
        + "time.sleep(5)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        while cputime.tree_seconds([proc.pid]) < 0.8 and time.monotonic() < deadline:
            time.sleep(0.1)
        used = cputime.tree_seconds([proc.pid])  # its own 0.4 s and its reaped child's 0.4 s
        assert 0.8 <= used < 1.6
        assert cputime.seconds(proc.pid, children=False) < used - 0.3  # without the child's
    finally:
        proc.kill()
        proc.wait()
    assert cputime.seconds(proc.pid) == 0.0  # gone


def test_an_account_reports_each_group_and_the_idle_cores():
    clock = {"a": 1.0, "b": 5.0}
    account = cputime.CpuAccount({name: (lambda n=name: clock[n]) for name in clock})
    account.start()
    clock["a"], clock["b"] = 3.0, 6.0
    account.stop()
    out = account.as_dict(wall_seconds=10.0, rounds=2)
    assert out["core_seconds"] == {"a": 2.0, "b": 1.0} and out["core_seconds_per_round"] == {"a": 1.0, "b": 0.5}
    assert out["idle_core_seconds"] == out["available_core_seconds"] - 3.0
