"""``serve-push``: the push endpoint over plain HTTP, the local twin of the push function's URL.

Every request gets the handler's answer and the connection closes: an upstream sends one push and
goes. A body is read only once the handler has accepted its declared length, and a client that asks
``Expect: 100-continue`` (curl does for bodies over 1 KiB) is told to go on only then, so a client
announcing megabytes gets its 413 without sending them; a chunked body (no declared length) is
refused with 411, as one the handler cannot size beforehand. A client has ``REQUEST_SECONDS`` for
each read.
"""

import logging
import re
import sys
from http import HTTPStatus
from typing import Any

from mirrorkeeper.push.handler import PushAnswer, PushHandler, PushRequest
from mirrorkeeper.sockets import DualStackHTTPServer, NamedRequestHandler

log = logging.getLogger(__name__)

REQUEST_SECONDS = 10.0
_DECIMAL = re.compile("[0-9]+")


class PushHTTPServer(DualStackHTTPServer):
    def __init__(self, address: tuple[str, int], handler: PushHandler) -> None:
        self.handler = handler
        super().__init__(address, PushRequestHandler)


class PushRequestHandler(NamedRequestHandler):
    server: PushHTTPServer

    timeout = REQUEST_SECONDS

    def parse_request(self) -> bool:
        # Every method goes to the push handler (which answers 405 for all but POST, as the function
        # URL does), not to a do_METHOD; False tells http.server the request is answered.
        if super().parse_request():
            self.close_connection = True
            self._serve()
        return False

    def _serve(self) -> None:
        if "Transfer-Encoding" in self.headers:
            self._send(PushAnswer(HTTPStatus.LENGTH_REQUIRED, {"error": "send the body with a Content-Length"}))
            return
        declared = self.headers.get("Content-Length")
        if declared is not None and not _DECIMAL.fullmatch(declared.strip()):
            self._send(PushAnswer(HTTPStatus.BAD_REQUEST, {"error": "the Content-Length is not a length"}))
            return
        # More digits than any body could have is simply too large (int() refuses 4,300 of them).
        length = None if declared is None else int(declared.strip()) if len(declared.strip()) < 19 else sys.maxsize
        request = PushRequest(
            method=self.command,
            path=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
            length=length,
            read_body=lambda: self._read_body(length),
            client=self.client_address[0],
        )
        self._send(self.server.handler.handle(request))

    def handle_expect_100(self) -> bool:
        # http.server would say "100 Continue" before anyone looked at the request: _read_body says it
        # once the handler wants the body.
        return True

    def _read_body(self, length: int | None) -> bytes:
        if not length:
            return b""
        if self.headers.get("Expect", "").lower() == "100-continue":
            self.send_response_only(HTTPStatus.CONTINUE)
            self.end_headers()
        return self.rfile.read(length)

    def _send(self, answer: PushAnswer) -> None:
        body = answer.body
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s", format % args, extra={"client": self.client_address[0]})
