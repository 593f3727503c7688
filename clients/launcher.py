"""Start N clients as children of one process that has already imported torch.

Importing torch costs several hundred MB per process. Forking the clients from
a parent that imported it (and, with ``--preload``, the data set) lets them
share those pages copy-on-write: 20 clients fit in about 1 GB instead of ~18.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import time
from pathlib import Path

from fllocal import env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="start N federated clients on consecutive ports")
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--transport", default="aws", help="which settings name the function's URL: aws or ow")
    p.add_argument("--base-url", default=None, help="overrides BASE_URL_AWS / BASE_URL_OW")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--base-port", type=int, default=None)
    p.add_argument("--state-dir", default=None)
    p.add_argument("--log-dir", default="logs")
    p.add_argument("--pid-file", default=None)
    p.add_argument("--preload", default=None,
                   help="data set to load once before forking, shared by all clients (default: FL_DATASET or mnist)")
    return p.parse_args(argv)


def base_url_for(transport: str, override: str | None) -> str:
    url = override or env.get(f"BASE_URL_{transport.upper()}")
    if not url:
        sys.exit(f"no function URL: set BASE_URL_{transport.upper()} (see .env.template) or pass --base-url")
    return url


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    url = base_url_for(args.transport, args.base_url)
    base_port = args.base_port or env.get_int("FL_CLIENT_BASE_PORT", 5001)
    state_dir = Path(args.state_dir or env.get("FL_STATE_DIR", ".fl/state")) / args.transport
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)

    import torch  # noqa: F401  (imported here, before fork, to be shared)

    from clients import serve as client_serve

    torch.set_num_threads(1)
    preload = args.preload or env.get("FL_DATASET") or "mnist"
    try:
        from fllocal import data

        data.load_raw(preload.lower())
    except Exception as exc:  # clients load it themselves later, unshared
        print(f"could not preload {preload}: {exc}", file=sys.stderr, flush=True)
    gc.collect()
    gc.freeze()  # keep the collector from touching (and so copying) the shared pages

    from clients import slots as trainer_slots
    from clients.slowdown import SlowdownError, factors

    slots = trainer_slots.from_env(default=os.cpu_count())  # FL_TRAINERS; as many as cores
    try:
        slowdown = factors(args.count)
    except SlowdownError as exc:
        sys.exit(str(exc))
    children: list[int] = []
    for i in range(args.count):
        pid = os.fork()
        if pid == 0:
            _child(i, args.host, base_port + i, url, state_dir, log_dir, client_serve, slowdown[i], slots)
        children.append(pid)
    if args.pid_file:
        Path(args.pid_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.pid_file).write_text("\n".join(str(p) for p in [os.getpid(), *children]) + "\n")
    slow = sum(f > 1 for f in slowdown)
    print(f"started {args.count} clients on ports {base_port}-{base_port + args.count - 1} "
          f"(logs in {log_dir}/), function at {url}"
          + (f"; {slow} of them {max(slowdown):g}x slower" if slow else "")
          + (f"; at most {len(slots.paths)} training at once" if slots else ""), flush=True)
    _supervise(children)


def _child(i: int, host: str, port: int, url: str, state_dir: Path, log_dir: Path, client_serve,
           slowdown: float, slots) -> None:
    name = f"client-{i:02d}"
    fd = os.open(log_dir / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    client_serve.setup_logging()
    code = 0
    try:
        client_serve.run_client(name, host, port, url, state_dir, slowdown=slowdown, slots=slots)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _supervise(children: list[int]) -> None:
    """Wait for the clients; pass SIGTERM/SIGINT on to them."""
    def forward(signum, frame):
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    alive = set(children)
    while alive:
        try:
            pid, _ = os.wait()
            alive.discard(pid)
        except ChildProcessError:
            break
        except InterruptedError:
            time.sleep(0.1)


if __name__ == "__main__":
    main()
