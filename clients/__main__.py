"""``python -m clients --name client-00 --port 5001``: one client in its own process."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clients.launcher import base_url_for
from clients.serve import run_client, setup_logging
from clients.settings import ClientSettings, ClientSettingsError


def main() -> None:
    p = argparse.ArgumentParser(description="run one federated client")
    p.add_argument("--name", default="client-00", help="identity slot; its state file makes restarts resume")
    p.add_argument("--port", type=int, default=5001)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--transport", default="aws")
    p.add_argument("--base-url", default=None)
    p.add_argument("--state-dir", default=None)
    args = p.parse_args()
    setup_logging()
    try:  # read once, handed down
        settings = ClientSettings.from_env()
    except ClientSettingsError as exc:
        sys.exit(str(exc))
    state_dir = Path(args.state_dir or settings.state_dir) / args.transport
    url = base_url_for(args.transport, args.base_url, settings)
    run_client(args.name, args.host, args.port, url, state_dir, settings)


if __name__ == "__main__":
    main()
