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

from clients.settings import ClientSettings, ClientSettingsError


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
    p.add_argument(
        "--per-process",
        type=int,
        default=None,
        help="simulation mode: this many client identities per process (clients/fleet.py), "
        "without an HTTP endpoint each (default: FL_CLIENTS_PER_PROCESS, or 1: a process "
        "and an endpoint per client)",
    )
    p.add_argument(
        "--preload",
        default=None,
        help="data set to load once before forking, shared by all clients (default: FL_DATASET or mnist)",
    )
    return p.parse_args(argv)


def base_url_for(transport: str, override: str | None, settings: ClientSettings) -> str:
    url = override or settings.base_url(transport)
    if not url:
        sys.exit(f"no function URL: set BASE_URL_{transport.upper()} (see .env.template) or pass --base-url")
    return url


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:  # every FL_* setting of the clients, read once here and handed down
        settings = ClientSettings.from_env()
    except ClientSettingsError as exc:
        sys.exit(str(exc))
    url = base_url_for(args.transport, args.base_url, settings)
    base_port = args.base_port or settings.client_base_port
    state_dir = Path(args.state_dir or settings.state_dir) / args.transport
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)

    import torch  # noqa: F401  (imported here, before fork, to be shared)

    from clients import serve as client_serve

    torch.set_num_threads(1)
    preload = args.preload or settings.dataset or "mnist"
    try:
        from fllocal import data

        data.load_raw(preload.lower())
    except Exception as exc:  # clients load it themselves later, unshared
        print(f"could not preload {preload}: {exc}", file=sys.stderr, flush=True)
    warm_up(torch, preload.lower())
    gc.collect()
    gc.freeze()  # keep the collector from touching (and so copying) the shared pages

    from clients import slots as trainer_slots
    from clients.slowdown import factors

    slots = trainer_slots.for_machine(settings.trainers, default=os.cpu_count())  # as many as cores
    per_process = args.per_process or settings.clients_per_process
    if per_process < 1:
        sys.exit(f"--per-process / FL_CLIENTS_PER_PROCESS must be at least 1, not {per_process}")
    workers = settings.fleet_workers  # 0: fleet_workers() decides
    slowdown = factors(args.count, settings)
    if per_process > 1 and any(f > 1 for f in slowdown):
        sys.exit(
            "FL_SLOWDOWN is for one process per client; simulated identities (FL_CLIENTS_PER_PROCESS) "
            "train at the machine's own speed"
        )
    children: list[int] = []
    groups = [list(range(i, min(args.count, i + per_process))) for i in range(0, args.count, per_process)]
    for g, members in enumerate(groups):
        pid = os.fork()
        if pid == 0:
            if per_process == 1:  # never returns
                i = members[0]
                _child(
                    _name(i, args.count),
                    log_dir,
                    lambda name, i=i: client_serve.run_client(
                        name, args.host, base_port + i, url, state_dir, settings, slowdown=slowdown[i], slots=slots
                    ),
                )
            else:
                _child(
                    f"fleet-{g:02d}",
                    log_dir,
                    lambda name, members=members: client_serve.run_fleet(
                        [_name(i, args.count) for i in members],
                        url,
                        state_dir,
                        workers or fleet_workers(len(groups)),
                        settings,
                        slots=slots,
                    ),
                )
        children.append(pid)
    if args.pid_file:
        Path(args.pid_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.pid_file).write_text("\n".join(str(p) for p in [os.getpid(), *children]) + "\n")
    slow = sum(f > 1 for f in slowdown)
    where = (
        f"on ports {base_port}-{base_port + args.count - 1}"
        if per_process == 1
        else f"in {len(groups)} processes of up to {per_process} (simulation: no HTTP endpoint each)"
    )
    print(
        f"started {args.count} clients {where} (logs in {log_dir}/), function at {url}"
        + (f"; {slow} of them {max(slowdown):g}x slower" if slow else "")
        + (f"; at most {len(slots.paths)} training at once" if slots else ""),
        flush=True,
    )
    _supervise(children)
    # the clients are gone and nothing is left to save: skip the interpreter's teardown of torch, which
    # costs half a second of processor while the stack stops
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def warm_up(torch, dataset: str) -> None:
    """A client's first round, on a few blank images, before the fork, so that what it builds once
    is built here and shared: the data set's usual model (the job's default) evaluated on 300 images
    and trained on a batch, as a client does. The compute library builds its kernels for these layers
    and batch shapes on first use: 8 MB in each client that builds them itself (measured after a
    round's memory is given back).
    """
    from clients import memory, trainer
    from flcore.domain.config import parse_config
    from flcore.shared.datasets import DATASET_MODELS, INPUT_SHAPES
    from fllocal import models

    if dataset not in DATASET_MODELS:  # no image model to prepare
        return
    defaults = parse_config({"dataset": dataset})
    x = torch.zeros(300, *INPUT_SHAPES[dataset])
    y = torch.zeros(300, dtype=torch.int64)
    model = models.build(DATASET_MODELS[dataset], dataset)
    trainer.evaluate(model, x, y)
    batch = defaults.batch_size
    settings = {"lr": 0.01, "momentum": 0.5, "seed": 0, "shift": 1, "precision": defaults.train_precision}
    trainer.train(model, x[:batch], y[:batch], epochs=1, batch_size=batch, **settings)
    memory.release()


def fleet_workers(processes: int) -> int:
    """Steps at once per simulation process: about 6 calls in flight per core over all of them.

    More only queues at the function: with 1,000 identities on 2 cores, 32 in flight gave
    calls a median of 514 ms and some past the function's 29 s timeout; 12 gave 64 ms, and
    rounds went twice as fast.
    """
    return max(2, round(6 * (os.cpu_count() or 1) / processes))


def _name(i: int, count: int) -> str:
    return f"client-{i:0{max(2, len(str(count - 1)))}d}"


def _child(name: str, log_dir: Path, run) -> None:
    """In a forked child: log to ``name``.log, run ``run(name)`` and exit with its outcome."""
    from clients import serve as client_serve

    fd = os.open(log_dir / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    client_serve.setup_logging()
    code = 0
    try:
        run(name)
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
