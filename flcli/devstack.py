"""The local stack: the embedded database and the real handler under serverless-offline.

Used by ``make run``, ``make serve`` and the end-to-end tests, so all three
start exactly the same parts the same way.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests
from pymongo import MongoClient

from flcli.memory import children_map

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_block(n: int, attempts: int = 50) -> int:
    """The first of ``n`` consecutive free ports (for a fleet of clients)."""
    import random

    for _ in range(attempts):
        base = random.randint(20000, 40000)
        try:
            socks = []
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no block of {n} free ports found")


def _wait(check, what: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; see {log}:\n{_tail(log)}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not become ready in {timeout:.0f}s; see {log}:\n{_tail(log)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def handler_pids(root: int) -> set[int]:
    """The Python handler processes serverless-offline started under ``root``.

    A process counts when ``invoke.py`` is on its command line and not on its parent's: that is the
    handler (or the ``sh -c`` that node starts it with), not a child it forks. invoke.py forks a
    child to run ``tty`` at start; until that child execs it shows its parent's command line, and
    under a burst of cold starts such children were taken for handlers that had died. Parents come
    from the same reading of /proc as the tree, and a process whose command line cannot be read
    (it has just exited) is not counted.
    """
    kids = children_map()
    parent: dict[int, int] = {}
    stack = [root]
    while stack:
        pid = stack.pop()
        for kid in kids.get(pid, []):
            if kid not in parent:
                parent[kid] = pid
                stack.append(kid)
    commands: dict[int, str] = {root: ""}
    for pid in parent:
        try:
            commands[pid] = Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
        except OSError:
            pass
    return {
        pid
        for pid, ppid in parent.items()
        if "invoke.py" in commands.get(pid, "") and ppid in commands and "invoke.py" not in commands[ppid]
    }


IDLE_REAP_S = 2_000_000  # below 2**31 ms
HOSTS = ("lean", "serverless-offline")  # what serves the handler locally (flcli/lambda_host.py, or the plugin)


class FunctionWatchdog(threading.Thread):
    """Restarts serverless-offline when it exits or one of its handler processes dies.

    serverless-offline keeps a handler process that died mid-request in its pool
    (every later call to it times out) or crashes on the broken pipe. The stack
    runs it with idle reaping off, so a handler that vanishes has crashed; the
    watchdog then restarts the function on the same ports, and the round's lease
    expires and is taken over as it would be on Lambda.
    """

    MAX_RESTARTS = 5  # within WINDOW_S; more means something is broken for good
    WINDOW_S = 120.0
    INTERVAL_S = 0.25  # a handler born and killed within one interval goes unseen

    def __init__(self, stack: LocalStack, start: Callable[[], None]):
        super().__init__(name="function-watchdog", daemon=True)
        self.stack, self.start_function = stack, start
        self.halt = threading.Event()
        self.restarts: list[float] = []
        self.failure: str | None = None
        self.known: set[int] = set()  # the handler processes seen alive at the last reading
        self.steady: set[int] = set()  # ... and at the one before: a vanished one of these has died

    def run(self) -> None:
        while not self.halt.is_set():
            proc = self.stack.function_proc
            if proc is not None and proc.poll() is not None:
                self._restart(f"serverless-offline exited with {proc.returncode}")
                self.known, self.steady = set(), set()
            elif proc is not None:
                alive = handler_pids(proc.pid)
                dead = self.steady - alive  # only a process seen in two readings counts as a handler
                self.steady, self.known = (self.known & alive, alive) if not dead else (set(), set())
                if dead:
                    self._restart(f"handler process {sorted(dead)} died")
            self.halt.wait(self.INTERVAL_S)

    def _restart(self, why: str) -> None:
        now = time.time()
        self.restarts = [t for t in self.restarts if now - t < self.WINDOW_S] + [now]
        if self.halt.is_set():
            return
        if len(self.restarts) > self.MAX_RESTARTS:
            self.failure = f"the function keeps dying ({why}); see {self.stack.log_dir / 'function.log'}"
            print(f"error: {self.failure}; stopping", file=sys.stderr, flush=True)
            self.halt.set()
            os.kill(os.getpid(), signal.SIGTERM)  # make serve / make run stop with that message
            return
        print(f"the local function stopped ({why}); restarting it", file=sys.stderr, flush=True)
        try:
            self.start_function()
        except Exception as exc:  # counted: the next check tries again
            print(f"restart failed: {exc}", file=sys.stderr, flush=True)


class LocalStack:
    """Start what is missing (database, function), remember it, stop it again."""

    def __init__(self, log_dir: Path | str = "logs", env: dict[str, str] | None = None, grace_s: float = 15.0):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **(env or {})}
        self.grace_s = grace_s  # how long stop() lets the processes exit before killing them
        self.procs: list[subprocess.Popen] = []
        self.mongodb_url: str | None = None
        self.base_url: str | None = None
        self.lambda_endpoint: str | None = None
        self.function_proc: subprocess.Popen | None = None
        self.database_proc: subprocess.Popen | None = None
        self.watchdog: FunctionWatchdog | None = None

    def _spawn(self, args: list[str], log_name: str, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
        log = self.log_dir / log_name
        fh = open(log, "ab")
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
        fh.close()
        self.procs.append(proc)
        return proc, log

    def start_database(self, port: int | None = None, storage: str = ":memory:", test_commands: bool = False) -> str:
        """SecantusDB, which speaks MongoDB's wire protocol: the embedded default."""
        port = port or free_port()
        exe = shutil.which("secantusd-py", path=str(Path(sys.executable).parent)) or "secantusd-py"
        args = [exe, "--host", "127.0.0.1", "--port", str(port), "--storage-path", storage, "--log-level", "WARNING"]
        # Nothing here reads the oplog (no change streams), and by default it keeps an hour of
        # full documents, GridFS chunks included, in the cache: a long session of big models
        # then fails every write with WT_CACHE_FULL. A minute is plenty for a driver's retries.
        args += ["--oplog-retention-seconds", "60", "--oplog-max-entries", "10000"]
        if test_commands:
            args.append("--enable-test-commands")
        proc, log = self._spawn(args, "database.log", self.env)
        self.database_proc = proc
        url = f"mongodb://127.0.0.1:{port}/?directConnection=true"

        def ready() -> bool:
            with MongoClient(url, serverSelectionTimeoutMS=500) as c:
                return bool(c.admin.command("ping")["ok"])

        _wait(ready, "the embedded database", proc, log, 60)
        self.mongodb_url = url
        return url

    def start_function(
        self,
        mongodb_url: str,
        http_port: int | None = None,
        lambda_port: int | None = None,
        stage: str = "dev",
        extra_env: dict[str, str] | None = None,
        watch: bool = True,
        host: str | None = None,
    ) -> str:
        """The real handler behind an emulated API Gateway and Lambda API: ``host`` ``lean``
        (:mod:`flcli.lambda_host`, the default, ``FL_LOCAL_HOST``) or ``serverless-offline``.

        With ``watch``, a :class:`FunctionWatchdog` restarts serverless-offline when it or a
        handler dies (the lean host replaces its own workers).
        """
        host = host or self.env.get("FL_LOCAL_HOST") or "lean"
        if host not in HOSTS:
            raise ValueError(f"FL_LOCAL_HOST must be one of {list(HOSTS)}, not {host!r}")
        sls = ROOT / "node_modules" / ".bin" / "serverless"
        if host == "serverless-offline" and not sls.exists():
            raise RuntimeError("serverless is not installed: run `npm ci` (make does this for you)")
        http_port, lambda_port = http_port or free_port(), lambda_port or free_port()
        venv = Path(sys.prefix)
        env = {
            **self.env,
            **(extra_env or {}),
            "MONGODB_URL": mongodb_url,
            "FL_STAGE": stage,
            "VIRTUAL_ENV": str(venv),
            "PATH": f"{venv / 'bin'}{os.pathsep}{self.env.get('PATH', '')}",
            "SLS_TELEMETRY_DISABLED": "1",
            "SLS_NOTIFICATIONS_MODE": "off",
            "SLS_DEPRECATION_DISABLE": "*",
            "PYTHONPATH": str(ROOT),
            # run the handler from this tree, not from the deployable zip (serverless-offline
            # runs a package.artifact when one is set: that is for `make deploy`)
            "FL_PACKAGE_ARTIFACT": "",
        }
        # Idle handlers are not reaped (for 23 days), so a handler process that vanishes has crashed.
        # The time must fit node's 32-bit timers in milliseconds: a longer one is taken as 1 ms, and the
        # idle cleaner then runs a thousand times a second, logging a warning each time.
        lean = [
            sys.executable,
            "-m",
            "flcli.lambda_host",
            "--http-port",
            str(http_port),
            "--lambda-port",
            str(lambda_port),
            "--stage",
            stage,
        ]
        offline = [
            str(sls),
            "offline",
            "start",
            "--httpPort",
            str(http_port),
            "--lambdaPort",
            str(lambda_port),
            "--host",
            "127.0.0.1",
            "--stage",
            stage,
            "--terminateIdleLambdaTime",
            str(IDLE_REAP_S),
        ]
        args = lean if host == "lean" else offline
        base = f"http://127.0.0.1:{http_port}/{stage}"

        def start() -> None:
            if self.function_proc is not None:
                self._kill(self.function_proc)
                self.procs.remove(self.function_proc)
            proc, log = self._spawn(args, "function.log", env)
            self.function_proc = proc

            def ready() -> bool:
                return requests.post(f"{base}/status", json={}, timeout=30).status_code < 500

            _wait(ready, "serverless offline", proc, log, 120)

        start()
        self.base_url = base
        self.lambda_endpoint = f"http://127.0.0.1:{lambda_port}"
        if watch and host == "serverless-offline":
            self.watchdog = FunctionWatchdog(self, start)
            self.watchdog.start()
        return base

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def stop(self) -> None:
        if self.watchdog is not None:
            self.watchdog.halt.set()
            if self.watchdog is not threading.current_thread():
                self.watchdog.join()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, 15)
                except ProcessLookupError:
                    continue
        deadline = time.time() + self.grace_s  # for all of them together
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.01, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        self.procs.clear()

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
