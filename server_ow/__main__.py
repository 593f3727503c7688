"""Apache OpenWhisk entry point: web-action params in, web-action response out.

Thin by design, like the Lambda handler: it finds the action, the body and the
headers in OpenWhisk's params and calls :func:`flcore.edge.api.handle`.

Deployed as a zip whose ``__main__.py`` is this file, OpenWhisk calls
``main(params)``. Deploy-time parameters (``MONGODB_URL``, ``FL_ADMIN_TOKEN``,
...) arrive in ``params`` too: they become the function's settings (parsed
once per container, see :func:`flcore.edge.settings.from_params`) and are never
treated as request fields (deploy them with ``-a final true`` so a request
cannot override them).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import sys
from urllib.parse import urlparse

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_ROOT, "flcore")) and _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
_HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.isdir(os.path.join(_HERE, "flcore")) and _HERE not in sys.path:
    sys.path.insert(0, _HERE)  # inside the action zip, flcore sits next to this file

from flcore.edge import settings, static  # noqa: E402
from flcore.edge.api import JSON_HEADERS, handle, scheduled_tick, to_json  # noqa: E402

SETTINGS = settings.NAMES


def action_name(params: dict) -> str:
    """From ``__ow_path`` (``/submit``), else from the API gateway's ``x-forwarded-url``."""
    path = params.get("__ow_path") or ""
    if not path.strip("/"):
        headers = params.get("__ow_headers") or {}
        path = urlparse(headers.get("x-forwarded-url", "")).path
    return path.rstrip("/").rsplit("/", 1)[-1]


def request_body(params: dict) -> object:
    """The JSON body: raw (``__ow_body``, base64 when binary) or merged into params."""
    if "__ow_body" in params:
        raw = params["__ow_body"]
        if isinstance(raw, str) and raw and raw.lstrip()[:1] not in ("{", "["):
            try:
                return base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                return raw  # not base64 either: the core reports invalid JSON
        return raw
    return {k: v for k, v in params.items() if not k.startswith("__ow_") and k not in SETTINGS}


def main(params: dict) -> dict:
    config = functools.partial(settings.from_params, params)
    if "__ow_method" not in params:
        # not a web request: the alarm trigger's rule (or `wsk action invoke`)
        if isinstance(params.get("action"), str):
            body = {k: v for k, v in params.items() if k not in SETTINGS and k != "action"}
            status, payload = handle(
                params["action"], body, {"authorization": str(params.get("authorization", ""))}, config
            )
            return {"statusCode": status, **payload}
        return scheduled_tick(config)
    if str(params["__ow_method"]).lower() == "get":  # the dashboard's page and files
        status, headers, text = static.serve(params.get("__ow_path") or "")
        return {"statusCode": status, "headers": headers, "body": text}
    status, payload = handle(action_name(params), request_body(params), params.get("__ow_headers") or {}, config)
    return {"statusCode": status, "headers": dict(JSON_HEADERS), "body": to_json(payload)}


if __name__ == "__main__":  # local check: python -m server_ow '{"__ow_method": "post", "__ow_path": "/status"}'
    print(json.dumps(main(json.loads(sys.argv[1] if len(sys.argv) > 1 else "{}"))))
