"""How a client reaches the function, in each way a user deploys it.

- ``https://.../dev`` (API Gateway, serverless-offline, an OpenWhisk web action):
  ``POST {base}/{action}`` with a JSON body;
- ``http://host:9000/2015-03-31/functions/<name>/invocations`` (a Lambda
  container image under ``docker run``, or serverless-offline's Lambda port):
  each call wrapped as an API Gateway proxy event;
- ``lambda://<function-name>`` (boto3 ``lambda.invoke``; ``FL_LAMBDA_ENDPOINT``
  overrides the endpoint for local use): the same events.

Every transport retries with backoff through urllib3/botocore; none hand-rolls it.
"""

from __future__ import annotations

import json
import os
from typing import Protocol
from urllib.parse import urlparse

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

# Actions that are not idempotent get no retry once the request may have arrived, unless the call
# carries an idempotency key (subscribe, register), which makes a retry answer the same identity.
_ONCE = ("subscribe", "start_training", "create_job", "register")  # join is idempotent per device and job


class FunctionError(Exception):
    """The function answered with an error status; ``status`` says which."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Transport(Protocol):
    def call(self, action: str, body: dict | None = None, token: str | None = None) -> dict: ...


def _session(read_retries: int) -> requests.Session:
    retry = Retry(
        total=6,
        connect=6,
        read=read_retries,
        status=6,
        backoff_factor=0.3,
        status_forcelist=(502, 503, 504),
        allowed_methods=None,
        raise_on_status=False,
    )
    session = requests.Session()
    # room for every thread of a simulated fleet (clients/fleet.py) to keep its connection
    session.mount("http://", HTTPAdapter(max_retries=retry, pool_maxsize=32))
    session.mount("https://", HTTPAdapter(max_retries=retry, pool_maxsize=32))
    return session


class _Posting:
    """Two retrying sessions: one for idempotent actions, one that never re-sends a request."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self._idempotent = _session(read_retries=3)
        self._once = _session(read_retries=0)

    def _post(self, action: str, url: str, body: dict | None, **kwargs) -> requests.Response:
        once = action in _ONCE and "idempotency_key" not in (body or {})
        return (self._once if once else self._idempotent).post(url, timeout=self.timeout, **kwargs)


def _result(status: int, payload: object) -> dict:
    if not isinstance(payload, dict):
        payload = {"error": str(payload)[:200]}
    if status >= 400:
        raise FunctionError(status, str(payload.get("error", "")))
    return payload


class HttpTransport(_Posting):
    """``POST {base_url}/{action}`` with a JSON body and an optional bearer token."""

    def __init__(self, base_url: str, timeout: float = 60.0):
        super().__init__(timeout)
        self.base_url = base_url.rstrip("/")

    def call(self, action: str, body: dict | None = None, token: str | None = None) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        resp = self._post(action, f"{self.base_url}/{action}", body, json=body or {}, headers=headers)
        try:
            payload = resp.json()
        except ValueError:
            payload = {"error": resp.text[:200]}
        return _result(resp.status_code, payload)


def proxy_event(action: str, body: dict | None, token: str | None) -> dict:
    """The API Gateway (REST) proxy event the function would get behind API Gateway."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return {
        "resource": f"/{action}",
        "path": f"/{action}",
        "httpMethod": "POST",
        "headers": headers,
        "queryStringParameters": None,
        "pathParameters": None,
        "isBase64Encoded": False,
        "requestContext": {"resourcePath": f"/{action}", "httpMethod": "POST"},
        "body": json.dumps(body or {}),
    }


def _unwrap(response: object) -> dict:
    """A proxy response (statusCode, body) back into a payload, or a FunctionError."""
    if not isinstance(response, dict) or "statusCode" not in response:
        message = response.get("errorMessage", response) if isinstance(response, dict) else response
        raise FunctionError(502, f"the function failed: {str(message)[:200]}")
    try:
        payload = json.loads(response.get("body") or "{}")
    except ValueError:
        payload = {"error": str(response.get("body"))[:200]}
    return _result(int(response["statusCode"]), payload)


class InvokeUrlTransport(_Posting):
    """Lambda's invoke API over plain HTTP: the Runtime Interface Emulator, serverless-offline."""

    def __init__(self, url: str, timeout: float = 60.0):
        super().__init__(timeout)
        self.url = url

    def call(self, action: str, body: dict | None = None, token: str | None = None) -> dict:
        resp = self._post(action, self.url, body, data=json.dumps(proxy_event(action, body, token)))
        if resp.status_code >= 400:
            raise FunctionError(
                502 if resp.status_code < 500 else resp.status_code, f"invoke failed: {resp.text[:200]}"
            )
        return _unwrap(resp.json())


class Boto3Transport:
    """boto3 ``lambda.invoke`` (RequestResponse) with the same proxy events."""

    def __init__(self, function_name: str, endpoint_url: str | None = None, region: str | None = None):
        import boto3
        from botocore.config import Config

        self.function_name = function_name
        kwargs: dict = {"config": Config(retries={"mode": "standard", "max_attempts": 6}, read_timeout=65)}
        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
            # a local emulator checks no signature; real AWS uses the normal credential chain
            if not os.environ.get("AWS_ACCESS_KEY_ID"):
                kwargs.update(aws_access_key_id="local", aws_secret_access_key="local")
        self._client = boto3.client("lambda", region_name=region, **kwargs)

    def call(self, action: str, body: dict | None = None, token: str | None = None) -> dict:
        resp = self._client.invoke(
            FunctionName=self.function_name,
            InvocationType="RequestResponse",
            Payload=json.dumps(proxy_event(action, body, token)).encode(),
        )
        raw = resp["Payload"].read()
        try:
            result = json.loads(raw or b"null")
        except ValueError:
            result = raw.decode(errors="replace")
        if resp.get("FunctionError"):
            raise FunctionError(502, f"the function failed: {str(result)[:200]}")
        return _unwrap(result)


def make_transport(url: str, timeout: float = 60.0, lambda_endpoint: str | None = None) -> Transport:
    """The transport a function URL calls for (see the module docstring).

    ``lambda_endpoint`` is where ``lambda://`` URLs are invoked (a local Lambda API); clients pass
    their settings' ``FL_LAMBDA_ENDPOINT``, the operator's tools leave it None to read it here.
    """
    parsed = urlparse(url)
    if parsed.scheme == "lambda":
        endpoint = os.environ.get("FL_LAMBDA_ENDPOINT", "") if lambda_endpoint is None else lambda_endpoint
        return Boto3Transport(parsed.netloc + parsed.path, endpoint_url=endpoint or None)
    if "/2015-03-31/functions/" in parsed.path and parsed.path.rstrip("/").endswith("/invocations"):
        return InvokeUrlTransport(url, timeout)
    return HttpTransport(url, timeout)
