"""A lean local host for the function's real handler (``server_aws/handler.py``), the default of
``make run`` and ``make serve``; serverless-offline stays for the tests of the AWS path (and
``FL_LOCAL_HOST=serverless-offline``).

It serves what API Gateway and Lambda serve: ``POST /{stage}/{action}``, ``GET
/{stage}/dashboard[/file]`` and Lambda's invoke API (``POST
/2015-03-31/functions/{name}/invocations``), with the same proxy events and
responses, from a fixed pool of worker processes that each import the handler
once, like warm Lambda instances. Why not serverless-offline by default: it
starts one Python process per request in flight (a burst of a hundred costs a
hundred cold starts on two cores, past the function's timeout), keeps them all,
and loses every request in flight when one of them dies. Here a request waits
in a queue until a worker is free, however many arrive at once: none is
refused or dropped. A worker that dies mid-request answers that request 502
and is replaced; one that runs past the function's timeout is killed and
answers 504, as API Gateway would. Each request is logged as serverless-offline
logs it (``POST /dev/poll (λ: api)``, then its ``Duration``), which the run's
invocation counts read.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import json
import multiprocessing
import os
import queue
import re
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's limit; the core refuses more than 6 MB itself
INVOKE = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations$")
SCHEDULE_S = 60.0  # serverless.yml: rate(1 minute)
_print_lock = threading.Lock()


def log(line: str) -> None:
    with _print_lock:
        print(line, flush=True)


def _worker(conn: Connection) -> None:
    """One warm instance: import the handler once, then run one event at a time."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the host stops its workers itself
    from server_aws import handler  # noqa: PLC0415  (in the worker, once, like a Lambda cold start)

    conn.send("ready")
    while True:
        try:
            event = conn.recv()
        except EOFError:
            return
        try:
            result = handler.handler(event, None)
        except Exception as exc:  # the handler answers every request itself; this is a crash
            result = {"errorMessage": f"{type(exc).__name__}: {exc}", "errorType": type(exc).__name__}
        conn.send(result)


class Worker:
    """A worker process and the thread that feeds it events from the host's queue."""

    def __init__(self, pool: WorkerPool, index: int):
        self.pool, self.index = pool, index
        self.process: multiprocessing.Process | None = None
        self.conn: Connection | None = None
        self.thread = threading.Thread(target=self._serve, name=f"worker-{index}", daemon=True)

    def start(self) -> None:
        parent, child = self.pool.context.Pipe()
        self.process = self.pool.context.Process(target=_worker, args=(child,), name=f"lambda-{self.index}")
        self.process.start()
        child.close()
        self.conn = parent
        if not parent.poll(120) or parent.recv() != "ready":
            raise RuntimeError(f"worker {self.index} did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join()

    def _serve(self) -> None:
        while True:
            item = self.pool.queue.get()
            if item is None:
                return
            event, future = item
            future.set_result(self._invoke(event))

    def _invoke(self, event: dict) -> tuple[int, object]:
        """(status, result): 200 and the handler's answer, 502 if the worker died, 504 past the timeout."""
        try:
            self.conn.send(event)
            if self.conn.poll(self.pool.timeout_s):
                return 200, self.conn.recv()
            why, status = f"ran past the function's timeout ({self.pool.timeout_s:g} s)", 504
        except (EOFError, OSError) as exc:
            why, status = f"died ({type(exc).__name__})", 502
        log(f"worker {self.index} {why}; starting a new one")
        self.stop()
        self.start()
        return status, {"errorMessage": f"the function {why}"}


class WorkerPool:
    """``size`` warm workers behind one queue: requests wait for a free worker, none is dropped."""

    def __init__(self, size: int, timeout_s: float):
        # Workers fork from a fork server that imported the handler once: they share its pages (about 20 MB
        # of each worker's 32 when each was a fresh interpreter) and start in milliseconds. The fork server
        # is a fresh single-threaded interpreter, so the host's threads stay here, as with spawning.
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(["server_aws.handler"])
        self.queue: queue.Queue = queue.Queue()
        self.timeout_s = timeout_s
        self.workers = [Worker(self, i) for i in range(size)]

    def start(self) -> None:
        starters = [threading.Thread(target=w.start) for w in self.workers]  # cold starts side by side
        [t.start() for t in starters]
        [t.join() for t in starters]
        for w in self.workers:
            w.thread.start()

    def invoke(self, event: dict) -> tuple[int, object]:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.queue.put((event, future))
        return future.result()

    def stop(self) -> None:
        for _ in self.workers:
            self.queue.put(None)
        for w in self.workers:
            w.stop()


def proxy_event(method: str, path: str, stage: str, headers: dict, body: bytes) -> dict:
    """The API Gateway (REST) proxy event for a request to ``/{stage}/...``."""
    resource_path = path[len(stage) + 1 :] or "/"
    action = resource_path.strip("/").split("/", 1)[0]
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    return {
        "resource": "/{action}" if method == "POST" else resource_path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "queryStringParameters": None,
        "pathParameters": {"action": action} if method == "POST" else None,
        "isBase64Encoded": encoded,
        "requestContext": {"stage": stage, "httpMethod": method, "requestId": str(uuid.uuid4())},
        "body": text if body else None,
    }


def make_handler(pool: WorkerPool, stage: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as clients' connection pools expect

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (the base class's name)
            pass  # every request is logged as serverless-offline logs it, in _run

        def do_GET(self) -> None:  # noqa: N802
            self._route("GET", b"")

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._reply(413, {"Content-Type": "application/json"}, b'{"message": "Request Too Long"}')
                self.close_connection = True
                return
            self._route("POST", self.rfile.read(length))

        def _route(self, method: str, body: bytes) -> None:
            path = self.path.split("?", 1)[0]
            invoke = INVOKE.match(path)
            if invoke and method == "POST":
                return self._invoke_api(body)
            if not path.startswith(f"/{stage}/"):
                return self._reply(404, {"Content-Type": "application/json"}, b'{"message": "Not Found"}')
            headers = {k: v for k, v in self.headers.items()}
            status, result = self._run(method, path, proxy_event(method, path, f"/{stage}", headers, body))
            if status != 200 or not isinstance(result, dict) or "statusCode" not in result:
                return self._reply(
                    status if status != 200 else 502,
                    {"Content-Type": "application/json"},
                    b'{"message": "Internal server error"}',
                )
            out = result.get("body") or ""
            data = base64.b64decode(out) if result.get("isBase64Encoded") else out.encode("utf-8")
            self._reply(int(result["statusCode"]), result.get("headers") or {}, data)

        def _invoke_api(self, body: bytes) -> None:
            """Lambda's invoke API: the event in, the handler's return value out (200, or an error)."""
            try:
                event = json.loads(body or b"{}")
            except ValueError:
                return self._reply(400, {"Content-Type": "application/json"}, b'{"message": "invalid JSON"}')
            status, result = self._run("POST", event.get("path") or "/invoke", event)
            headers = {"Content-Type": "application/json"}
            if status != 200 or (isinstance(result, dict) and "errorMessage" in result):
                headers["X-Amz-Function-Error"] = "Unhandled"
            self._reply(200, headers, json.dumps(result).encode())

        def _run(self, method: str, path: str, event: dict) -> tuple[int, object]:
            log(f"{method} {path} (λ: api)")
            started = time.perf_counter()
            status, result = pool.invoke(event)
            ms = (time.perf_counter() - started) * 1000
            log(f"(λ: api) RequestId: {uuid.uuid4()}  Duration: {ms:.2f} ms  Billed Duration: {int(ms) + 1} ms")
            return status, result

        def _reply(self, status: int, headers: dict, data: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                if key.lower() not in ("content-length", "connection"):
                    self.send_header(key, str(value))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


class Server(ThreadingHTTPServer):
    """One thread per connection, and room for a burst of connections waiting to be accepted
    (socketserver's default backlog of 5 resets the sixth at once)."""

    daemon_threads = True
    request_queue_size = 1024


def schedule(pool: WorkerPool, stop: threading.Event) -> None:
    """What the serverless.yml schedule does: close rounds nobody pokes, every minute."""
    while not stop.wait(SCHEDULE_S):
        pool.invoke({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}})


def default_workers() -> int:
    """Two per core, at least four: most requests wait on the database, a few aggregate."""
    return max(4, 2 * (os.cpu_count() or 1))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="serve the function's handler on API Gateway's and Lambda's routes")
    p.add_argument("--http-port", type=int, default=3000)
    p.add_argument("--lambda-port", type=int, default=3002)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--stage", default="dev")
    p.add_argument("--workers", type=int, default=int(os.environ.get("FL_LOCAL_WORKERS") or 0) or default_workers())
    p.add_argument("--timeout", type=float, default=29.0, help="seconds a request may run (serverless.yml: 29)")
    args = p.parse_args(argv)
    pool = WorkerPool(args.workers, args.timeout)
    pool.start()
    handler = make_handler(pool, args.stage)
    servers = [Server((args.host, port), handler) for port in (args.http_port, args.lambda_port)]
    for server in servers:
        # a look for shutdown ten times a second: the host stops in a tenth of a second, not half of one
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    stopping = threading.Event()
    if os.environ.get("FL_SCHEDULE", "true").lower() != "false":
        threading.Thread(target=schedule, args=(pool, stopping), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stopping.set())
    log(
        f"{args.workers} workers ready; Server ready: http://{args.host}:{args.http_port}/{args.stage} "
        f"(Lambda invoke API on port {args.lambda_port})"
    )
    stopping.wait()
    for server in servers:
        server.shutdown()
    pool.stop()


if __name__ == "__main__":
    sys.exit(main())
