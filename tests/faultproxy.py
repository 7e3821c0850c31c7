"""A real HTTP proxy in front of the moto server that injects S3 faults (503 SlowDown, 500)."""

import http.client
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# Decides per request: None to forward, or (status, S3 error code) to answer instead.
FaultRule = Callable[[str, str, int], tuple[int, str] | None]


def every_nth(n: int, status: int = 503, code: str = "SlowDown") -> FaultRule:
    return lambda method, path, number: (status, code) if number % n == 0 else None


@contextmanager
def fault_proxy(target: str, rule: FaultRule) -> Iterator[dict[str, object]]:
    upstream = urlsplit(target)
    stats: dict[str, object] = {"requests": 0, "faults": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with lock:
                stats["requests"] = int(str(stats["requests"])) + 1
                number = int(str(stats["requests"]))
            fault = rule(self.command, self.path, number)
            if fault is not None:
                with lock:
                    stats["faults"] = int(str(stats["faults"])) + 1
                payload = f"<Error><Code>{fault[1]}</Code><Message>injected</Message></Error>".encode()
                self.send_response(fault[0])
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            conn.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815 - http.server names

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stats["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield stats
    finally:
        server.shutdown()
        server.server_close()
