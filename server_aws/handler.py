"""AWS Lambda entry point: API Gateway (REST proxy) events in, proxy responses out.

Thin by design: it only finds the action name and body in the event; all logic
is in :mod:`flcore.edge.api`. It never imports torch.
"""

from __future__ import annotations

import base64
import logging
import os
import sys

# In the Lambda zip and under serverless-offline the project root is the cwd;
# this makes ``flcore`` importable however the handler is loaded.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from flcore.edge import settings, static  # noqa: E402
from flcore.edge.api import JSON_HEADERS, handle, scheduled_tick, to_json  # noqa: E402

# read once per container, from the environment serverless.yml sets
SETTINGS = settings.once(settings.Settings.from_env)
logging.getLogger().setLevel(os.environ.get("FL_LOG_LEVEL", "INFO").upper())


def action_name(event: dict) -> str:
    """The last segment of the request path: ``/dev/submit`` -> ``submit``."""
    params = event.get("pathParameters") or {}
    if params.get("action"):
        return params["action"]
    path = event.get("path") or event.get("rawPath") or event.get("resource") or ""
    return path.rstrip("/").rsplit("/", 1)[-1]


def method(event: dict) -> str:
    return event.get("httpMethod") or (event.get("requestContext") or {}).get("http", {}).get("method") or "POST"


def handler(event: dict, context: object = None) -> dict:
    if event.get("source") == "aws.events" or event.get("detail-type") == "Scheduled Event":
        return scheduled_tick(SETTINGS)
    if method(event).upper() == "GET":  # the dashboard's page and files
        status, headers, text = static.serve(event.get("path") or event.get("rawPath") or "")
        return {"statusCode": status, "headers": headers, "body": text}
    body = event.get("body")
    if body is not None and event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(body)
        except ValueError:
            body = b"\x00"  # undecodable: let the core report invalid JSON
    status, payload = handle(action_name(event), body, event.get("headers") or {}, SETTINGS)
    return {"statusCode": status, "headers": dict(JSON_HEADERS), "body": to_json(payload)}
