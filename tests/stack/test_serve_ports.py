"""``make serve`` on a port another program holds: a line naming the setting that moves it, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_port_in_use_is_named_with_the_setting_that_moves_it():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {**os.environ, "FL_HTTP_PORT": str(port), "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-m", "flcli.serve"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"port {port} is in use by another program; set FL_HTTP_PORT to another port" in out.stderr
    assert "Traceback" not in out.stderr and "EADDRINUSE" not in out.stderr
