"""The dashboard's files, served by the function itself on GET (no CDN, no other server).

Files are found by the last segment of the path, so ``.../dashboard``,
``.../dashboard/`` and ``.../dashboard/app.js`` all work behind any prefix
(an API Gateway stage, an OpenWhisk web action's path). They are built by
``npm run build:dashboard`` into ``flcore/dashboard/`` and read once per container.
"""

from __future__ import annotations

import functools
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent / "dashboard"
FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "index.html": "text/html; charset=utf-8",
}
# The page may only load its own files and talk to its own function: a script
# injected through data (a job name) has nowhere to load from or send to.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@functools.cache
def _read(name: str) -> str:
    return (HERE / name).read_text(encoding="utf-8")


def serve(path: str) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) for a GET of ``path``."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if name in ("dashboard", "", "index.html"):
        name = "index.html"
    if name not in FILES:
        return (
            404,
            {"Content-Type": "text/plain; charset=utf-8", **SECURITY_HEADERS},
            "not found: the dashboard is at .../dashboard",
        )
    cache = "no-cache" if name == "index.html" else "public, max-age=300"
    return 200, {"Content-Type": FILES[name], "Cache-Control": cache, **SECURITY_HEADERS}, _read(name)
