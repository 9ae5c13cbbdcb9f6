#!/usr/bin/env python3
"""A fault-injecting HTTP/1.1 reverse proxy in front of an S3 server (moto), for the soak.

Every request (method, path and query, headers with Host unchanged, body) is forwarded to
the upstream server, one upstream connection per request, and its answer streamed back. The
Host header is forwarded as the client sent it, so SigV4 signatures, which cover it, still
verify upstream. With probability `fault_rate` per request (a seeded RNG) one fault, chosen
at random, is injected instead:

  slowdown     answer 503 with an S3 error body (Code SlowDown), not forwarded
  internal     answer 500 with an S3 error body (Code InternalError), not forwarded
  answer_lost  forward, read the store's whole answer, then close the client's connection
               without writing a byte: the store did the work, the client never heard
  body_cut     forward, then relay the status, the headers (with the full Content-Length) and
               half of the body, and close; an answer with fewer than 2 body bytes cannot be
               cut and gets answer_lost instead (and is counted so)

Faults are counted by kind and by S3 operation (inferred from method, path and query); the
last faults are kept with the time they were injected, and the last requests (when, which,
the fault, the status answered) as a trace. `GET /__faults` (never forwarded) answers the
counts as JSON.

Standard library only. As a module: `FaultProxy(upstream, fault_rate, seed).start()` serves
from a thread, `.counts()`, `.faults_since(t)` and `.trace()` read what it did, `.stop()` closes the
listening socket and every client connection and waits for the serving thread. As a program:

    python3 bench/store_faults.py --upstream http://127.0.0.1:PORT [--fault-rate 0.05]
        [--seed 1] [--port 0] [--counts-json FILE]

prints `listening on http://127.0.0.1:PORT`, serves until SIGTERM or SIGINT, and then writes
the counts to --counts-json (if given) and stdout.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import http.server
import json
import random
import signal
import socket
import sys
import threading
import time
import urllib.parse

KINDS = ("slowdown", "internal", "answer_lost", "body_cut")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
              "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"}
CHUNK = 64 * 1024
ERROR_BODY = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" \
             "<Error><Code>{code}</Code><Message>injected</Message><RequestId>fault-{n}</RequestId></Error>"
STATUS = {"slowdown": (503, "Slow Down", "SlowDown"), "internal": (500, "Internal Server Error", "InternalError")}
# Client connections served at once, at most; more are closed at once.
MAX_CONNECTIONS = 64
# Idle or stalled client connections are closed after this many seconds.
CLIENT_TIMEOUT = 120
UPSTREAM_TIMEOUT = 120
RECENT_FAULTS = 10_000
RECENT_REQUESTS = 200_000


class ClientGone(Exception):
    """The client closed its connection in the middle of its request (a killed process)."""


def s3_operation(method: str, target: str, headers) -> str:
    """The S3 operation of a path-style request (`/bucket[/key]?query`)."""
    parsed = urllib.parse.urlsplit(target)
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    segments = parsed.path.lstrip("/").split("/", 1)
    has_key = len(segments) == 2 and segments[1] != ""
    copy = "x-amz-copy-source" in headers
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        if "delete" in query:
            return "DeleteObjects"
        return "PostObject"
    if method == "PUT":
        if "partNumber" in query and "uploadId" in query:
            return "UploadPartCopy" if copy else "UploadPart"
        if not has_key:
            return "CreateBucket"
        return "CopyObject" if copy else "PutObject"
    if method == "DELETE":
        if "uploadId" in query:
            return "AbortMultipartUpload"
        return "DeleteObject" if has_key else "DeleteBucket"
    if method == "GET":
        if not has_key:
            if "uploads" in query:
                return "ListMultipartUploads"
            if query.get("list-type") == ["2"]:
                return "ListObjectsV2"
            if "location" in query:
                return "GetBucketLocation"
            return "ListObjects"
        return "ListParts" if "uploadId" in query else "GetObject"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    return method


class FaultProxy:
    """The proxy; see the module's docstring."""

    def __init__(self, upstream: str, fault_rate: float, seed: int, kinds=KINDS,
                 host: str = "127.0.0.1", port: int = 0):
        u = urllib.parse.urlsplit(upstream)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"upstream must be http://HOST:PORT, not {upstream!r}")
        self.upstream = (u.hostname, u.port or 80)
        self.fault_rate = fault_rate
        self.kinds = tuple(kinds)
        self._rng = random.Random(seed)
        self.seed = seed
        self._lock = threading.Lock()
        self._requests = collections.Counter()
        self._by_kind = collections.Counter()
        self._by_op = collections.Counter()
        self._by_kind_op = collections.Counter()
        self._errors = collections.Counter()
        self._recent: collections.deque = collections.deque(maxlen=RECENT_FAULTS)
        self._trace: collections.deque = collections.deque(maxlen=RECENT_REQUESTS)
        self._connections: set[socket.socket] = set()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._thread: threading.Thread | None = None
        proxy = self

        class Handler(_Handler):
            pass

        Handler.proxy = proxy

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def process_request(self, request, client_address):
                if not proxy._slots.acquire(blocking=False):
                    self.shutdown_request(request)
                    return
                with proxy._lock:
                    proxy._connections.add(request)
                super().process_request(request, client_address)

            def process_request_thread(self, request, client_address):
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    with proxy._lock:
                        proxy._connections.discard(request)
                    proxy._slots.release()

            def handle_error(self, request, client_address):
                kind = sys.exc_info()[0]
                with proxy._lock:
                    proxy._errors[kind.__name__ if kind else "?"] += 1

        self._server = Server((host, port), Handler)
        self.url = f"http://{host}:{self._server.server_address[1]}"

    # -- running ----------------------------------------------------------------------------
    def start(self) -> "FaultProxy":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="store-faults", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving: no new connection, every open one shut, the serving thread joined."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        with self._lock:
            open_connections = list(self._connections)
        for conn in open_connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self._lock:
                if not self._connections:
                    break
            time.sleep(0.05)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- decisions and counters ---------------------------------------------------------------
    def _decide(self, op: str) -> str | None:
        with self._lock:
            self._requests[op] += 1
            if self.fault_rate > 0 and self._rng.random() < self.fault_rate:
                return self._rng.choice(self.kinds)
            return None

    def _count(self, kind: str, op: str, target: str) -> None:
        with self._lock:
            self._by_kind[kind] += 1
            self._by_op[op] += 1
            self._by_kind_op[f"{kind} {op}"] += 1
            self._recent.append((time.monotonic(), kind, op, target))

    def counts(self) -> dict:
        """Requests by operation, faults in all and by kind, operation and both, proxy errors."""
        with self._lock:
            return {
                "fault_rate": self.fault_rate,
                "seed": self.seed,
                "requests": sum(self._requests.values()),
                "requests_by_op": dict(self._requests.most_common()),
                "faults": sum(self._by_kind.values()),
                "by_kind": dict(self._by_kind.most_common()),
                "by_op": dict(self._by_op.most_common()),
                "by_kind_op": dict(self._by_kind_op.most_common()),
                "proxy_errors": dict(self._errors),
            }

    def trace(self) -> list[dict]:
        """The last requests, oldest first: when they came and ended (time.monotonic()), their
        method, path, operation, fault (or None) and the status sent back (None: no answer)."""
        with self._lock:
            return list(self._trace)

    def faults_since(self, since: float) -> list[tuple[float, str, str, str]]:
        """The faults injected since `since` (time.monotonic()): (time, kind, op, path)."""
        with self._lock:
            return [f for f in self._recent if f[0] >= since]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = CLIENT_TIMEOUT
    proxy: FaultProxy

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass

    def do_GET(self):
        if self.path == "/__faults":
            body = json.dumps(self.proxy.counts(), indent=1).encode()
            self._discard_body()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self._proxy()

    # -- request body -------------------------------------------------------------------------
    def _body_chunks(self):
        """The request body, as it arrives (chunked or Content-Length)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                yield from self._read_exactly(size)
                self.rfile.readline()
        else:
            yield from self._read_exactly(int(self.headers.get("Content-Length") or 0))

    def _read_exactly(self, left):
        while left:
            data = self.rfile.read(min(left, CHUNK))
            if not data:
                raise ClientGone("the request body was cut")
            left -= len(data)
            yield data

    def _discard_body(self) -> None:
        for _ in self._body_chunks():
            pass

    # -- the proxy ------------------------------------------------------------------------------
    def send_response_only(self, code, message=None):
        self._sent_status = code
        super().send_response_only(code, message)

    def _proxy(self):
        started = time.monotonic()
        self._sent_status = None
        self._fault = None
        op = s3_operation(self.command, self.path, self.headers)
        try:
            self._forward(op)
        finally:
            entry = {"t": round(started, 4), "end": round(time.monotonic(), 4), "method": self.command,
                     "path": self.path, "op": op, "fault": self._fault, "status": self._sent_status}
            with self.proxy._lock:
                self.proxy._trace.append(entry)

    def _forward(self, op: str):
        proxy = self.proxy
        kind = proxy._decide(op)
        self._fault = kind
        if kind in STATUS:
            self._discard_body()
            status, reason, code = STATUS[kind]
            proxy._count(kind, op, self.path)
            body = ERROR_BODY.format(code=code, n=id(self)).encode()
            self.send_response_only(status, reason)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-amz-request-id", f"fault-{id(self)}")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return
        chunked_request = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        upstream = http.client.HTTPConnection(*proxy.upstream, timeout=UPSTREAM_TIMEOUT)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    upstream.putheader(name, value)
            if chunked_request:
                upstream.putheader("Transfer-Encoding", "chunked")
            try:
                upstream.endheaders()
                for data in self._body_chunks():
                    upstream.send(b"%x\r\n%s\r\n" % (len(data), data) if chunked_request else data)
                if chunked_request:
                    upstream.send(b"0\r\n\r\n")
                response = upstream.getresponse()
            except (OSError, http.client.HTTPException) as e:
                self._bad_gateway(e)
                return
            if kind == "answer_lost":
                while response.read(CHUNK):
                    pass
                self._drop(kind, op)
                return
            if kind == "body_cut":
                body = response.read()
                if len(body) < 2 or self.command == "HEAD":
                    self._drop("answer_lost", op)
                    return
                proxy._count(kind, op, self.path)
                self._send_head(response, length=len(body))
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self._stream(response)
        finally:
            upstream.close()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _proxy

    def _bad_gateway(self, e: BaseException) -> None:
        """The store did not answer: 502, which the client may retry (not a fault of ours)."""
        with self.proxy._lock:
            self.proxy._errors["upstream " + type(e).__name__] += 1
        body = ERROR_BODY.format(code="BadGateway", n=id(self)).encode()
        self.send_response_only(502, "Bad Gateway")
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def _drop(self, kind: str, op: str) -> None:
        """Closes the client's connection without an answer."""
        self._fault = kind
        self.proxy._count(kind, op, self.path)
        self.close_connection = True

    def _send_head(self, response: http.client.HTTPResponse, length: int | None) -> None:
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP and not (length is not None and name.lower() == "content-length"):
                self.send_header(name, value)
        if length is not None:
            self.send_header("Content-Length", str(length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def _stream(self, response: http.client.HTTPResponse) -> None:
        """Relays the store's answer as it arrives."""
        no_body = self.command == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200
        has_length = response.getheader("Content-Length") is not None
        chunked = not no_body and not has_length and response.chunked
        if not no_body and not has_length and not chunked:
            self.close_connection = True  # delimited by the upstream's close: so is ours
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if no_body:
            return
        while data := response.read(CHUNK):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", required=True, help="the S3 server, http://HOST:PORT")
    ap.add_argument("--fault-rate", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--kinds", default=",".join(KINDS), help="faults to choose from, comma-separated")
    ap.add_argument("--counts-json", help="where to write the counts on exit")
    a = ap.parse_args(argv)
    kinds = [k for k in a.kinds.split(",") if k]
    if unknown := set(kinds) - set(KINDS):
        ap.error(f"unknown kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    proxy = FaultProxy(a.upstream, a.fault_rate, a.seed, kinds, port=a.port).start()
    print(f"listening on {proxy.url}", flush=True)
    while not stop.wait(1):
        pass
    proxy.stop()
    text = json.dumps(proxy.counts(), indent=1)
    if a.counts_json:
        with open(a.counts_json, "w") as f:
            f.write(text + "\n")
    print(text, flush=True)


if __name__ == "__main__":
    main()
