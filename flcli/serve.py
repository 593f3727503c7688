"""``make serve``: the database and the function in the foreground, for clients you start yourself."""

from __future__ import annotations

import signal
import socket
import sys

from flcli.devstack import ROOT, LocalStack
from fllocal import env


def taken(ports: dict[str, int]) -> str | None:
    """Which of these ports (setting -> port) another program holds, as a message naming the setting."""
    for name, port in ports.items():
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return (
                    f"port {port} is in use by another program; set {name} to another port (in .env or the environment)"
                )
    return None


def main() -> int:
    env.load()
    ports = {"FL_HTTP_PORT": env.get_int("FL_HTTP_PORT", 3000), "FL_LAMBDA_PORT": env.get_int("FL_LAMBDA_PORT", 3002)}
    problem = taken(ports)
    if problem:
        print(f"make serve: {problem}", file=sys.stderr)
        return 2
    with LocalStack(ROOT / "logs") as stack:
        mongodb_url = env.get("MONGODB_URL") or stack.start_database(storage=str(ROOT / ".fl" / "db"))
        base_url = stack.start_function(
            mongodb_url, http_port=ports["FL_HTTP_PORT"], lambda_port=ports["FL_LAMBDA_PORT"]
        )
        print(f"BASE_URL_AWS={base_url}")
        token = env.get("FL_ADMIN_TOKEN")
        print(f"dashboard: {base_url}/dashboard" + (f"#token={token}" if token else ""))
        print(f"Lambda invoke endpoint: {stack.lambda_endpoint} (function name serverless-fl-dev-api)")
        print(f"database: {mongodb_url}; logs in {ROOT / 'logs'}; Ctrl-C stops everything", flush=True)
        try:
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    sys.exit(main())
