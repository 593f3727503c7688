"""How a client reaches the function: JSON over HTTP (API Gateway or any web endpoint)."""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry


class FunctionError(Exception):
    """The function answered with an error status; ``status`` says which."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def _session(read_retries: int) -> requests.Session:
    # urllib3 does the backoff; POST is retried because every action but
    # subscribe is idempotent, and subscribe gets no read retries.
    retry = Retry(total=6, connect=6, read=read_retries, status=6, backoff_factor=0.3,
                  status_forcelist=(502, 503, 504), allowed_methods=None, raise_on_status=False)
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


class HttpTransport:
    """``POST {base_url}/{action}`` with a JSON body and an optional bearer token."""

    def __init__(self, base_url: str, timeout: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._idempotent = _session(read_retries=3)
        self._once = _session(read_retries=0)

    def call(self, action: str, body: dict | None = None, token: str | None = None) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        session = self._once if action in ("subscribe", "start_training") else self._idempotent
        resp = session.post(f"{self.base_url}/{action}", json=body or {}, headers=headers, timeout=self.timeout)
        try:
            payload = resp.json()
        except ValueError:
            payload = {"error": resp.text[:200]}
        if resp.status_code >= 400:
            raise FunctionError(resp.status_code, payload.get("error", "") if isinstance(payload, dict) else "")
        return payload
