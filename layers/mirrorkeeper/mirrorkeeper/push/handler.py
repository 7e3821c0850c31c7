"""Every answer of the push endpoint, decided in one place for the function URL and serve-push alike.

``POST /push/<mirror>`` is checked in an order that lets nothing be learned cheaply and spends
nothing on a request that fails an earlier check: the route (404, 405); the size (413, from the
declared length before the body is read); the mirror (404, the same answer for a mirror that does
not exist and one that takes no pushes); the signature (401, HMAC compared in constant time); the
timestamp (403 outside the window either way); the signature's first use (403, host-wide, before
any state is touched); the mirror's rate (429). Then the push starts a sync (202 started) or waits
for the one running (202 queued). Nothing starts on a refusal, and each is logged with its reason,
never with the secret or the signature.
"""

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from mirrorkeeper.config import PushMirror
from mirrorkeeper.errors import MirrorkeeperError
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.push.admission import Admission, abandon_start, admit
from mirrorkeeper.push.signature import (
    MAX_BODY,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WINDOW,
    replay_digest,
    signature_matches,
    skew,
    well_formed,
)
from mirrorkeeper.push.starters import SyncStarter
from mirrorkeeper.state import StateStore

if TYPE_CHECKING:
    from mirrorkeeper.aws import S3Client

log = logging.getLogger(__name__)

ROUTE = "/push/"
RETRY_AFTER_FAILURE = 30  # seconds an upstream should wait after a 503 (storage or ECS trouble)
_NAME_CHARS = 100  # of a requested name, in the log: a refused request may carry any garbage


@dataclass(frozen=True)
class PushRequest:
    """What the endpoint needs of a request, whatever carried it. ``headers`` are keyed in lower case;
    ``length`` is the declared body length (None: none declared); ``read_body`` reads the body, and is
    only called once ``length`` passed."""

    method: str
    path: str
    headers: Mapping[str, str]
    length: int | None
    read_body: Callable[[], bytes]
    client: str = ""


@dataclass(frozen=True)
class PushAnswer:
    status: int
    document: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> bytes:
        return json.dumps({"status": self.status, **self.document}).encode() + b"\n"


class PushHandler:
    def __init__(
        self,
        mirrors: Mapping[str, PushMirror],
        client: "S3Client",
        host: MirrorLayout,
        secrets: Callable[[PushMirror], bytes],
        starter: SyncStarter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.mirrors, self.client, self.secrets, self.starter, self.clock = mirrors, client, secrets, starter, clock
        self.host_state = StateStore(client, host)

    def handle(self, request: PushRequest) -> PushAnswer:
        try:
            answer = self._answer(request)
        except MirrorkeeperError as exc:
            # Storage or Secrets Manager trouble, an unreadable secret: nothing was started; the upstream
            # may try again, and the operator reads why here.
            log.error("push not handled", extra={"path": request.path[:_NAME_CHARS], "error": str(exc)})
            answer = _refusal(HTTPStatus.SERVICE_UNAVAILABLE, "the push could not be handled now; try again shortly")
            answer.headers["Retry-After"] = str(RETRY_AFTER_FAILURE)
        return answer

    def _answer(self, request: PushRequest) -> PushAnswer:
        path = request.path.partition("?")[0]
        name = path[len(ROUTE) :] if path.startswith(ROUTE) else ""
        if not name or "/" in name:
            return self._refuse(request, HTTPStatus.NOT_FOUND, "pushes go to POST /push/<mirror>", "no such route")
        if request.method != "POST":
            answer = self._refuse(request, HTTPStatus.METHOD_NOT_ALLOWED, "a push is a POST", f"{request.method[:10]}")
            answer.headers["Allow"] = "POST"
            return answer
        too_large = f"a push's body is {MAX_BODY} bytes at most"
        if request.length is not None and request.length > MAX_BODY:
            return self._refuse(request, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, too_large, f"{request.length} bytes")
        body = request.read_body()
        if len(body) > MAX_BODY:
            return self._refuse(request, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, too_large, f"{len(body)} bytes")
        mirror = self.mirrors.get(name)
        if mirror is None or mirror.closed:
            reason = mirror.closed if mirror is not None else "no such mirror"
            return self._refuse(request, HTTPStatus.NOT_FOUND, f"no mirror {name!r} takes pushes here", reason, name)
        return self._signed(request, mirror, body)

    def _signed(self, request: PushRequest, mirror: PushMirror, body: bytes) -> PushAnswer:
        timestamp = request.headers.get(TIMESTAMP_HEADER.lower(), "")
        signature = request.headers.get(SIGNATURE_HEADER.lower(), "")
        if not timestamp or not signature:
            missing = SIGNATURE_HEADER if not signature else TIMESTAMP_HEADER
            return self._refuse(request, HTTPStatus.UNAUTHORIZED, f"no {missing} header", "unsigned", mirror.name)
        if not well_formed(timestamp, signature) or not signature_matches(
            self.secrets(mirror), timestamp, body, signature
        ):
            return self._refuse(
                request,
                HTTPStatus.UNAUTHORIZED,
                f"the signature is not sha256=HMAC-SHA256('<timestamp>.<body>') under {mirror.name}'s push secret",
                "bad signature",
                mirror.name,
            )
        now = self.clock()
        off = skew(timestamp, now)
        if off is None or off > WINDOW:
            shown = "not epoch seconds" if off is None else f"{off:.0f} s off the endpoint's clock"
            return self._refuse(
                request,
                HTTPStatus.FORBIDDEN,
                f"the timestamp is {shown}; it must be within {WINDOW} s (check the sender's clock)",
                f"timestamp {shown}",
                mirror.name,
            )
        if not self.host_state.record_push_signature(replay_digest(signature)):
            return self._refuse(
                request,
                HTTPStatus.FORBIDDEN,
                "this signature was used already: sign each push anew (a new timestamp or body)",
                "signature used before",
                mirror.name,
            )
        return self._admitted(request, mirror, now)

    def _admitted(self, request: PushRequest, mirror: PushMirror, now: float) -> PushAnswer:
        state = StateStore(self.client, mirror.layout)
        decision = admit(state, now, mirror.rate_limit)
        if decision.admission is Admission.LIMITED:
            answer = self._refuse(
                request,
                HTTPStatus.TOO_MANY_REQUESTS,
                f"{mirror.name} takes {mirror.rate_limit} pushes a minute; try again in {decision.retry_after} s",
                "rate limited",
                mirror.name,
            )
            answer.headers["Retry-After"] = str(decision.retry_after)
            return answer
        if decision.admission is Admission.QUEUED:
            log.info(
                "push queued",
                extra={"mirror": mirror.name, "waiting": decision.waiting, "client": request.client},
            )
            message = f"{mirror.name}'s sync is running or starting: it runs once more after it"
            return PushAnswer(HTTPStatus.ACCEPTED, {"result": "queued", "mirror": mirror.name, "message": message})
        try:
            started = self.starter.start(mirror)
        except MirrorkeeperError:
            abandon_start(state, now)
            raise
        log.info("push started a sync", extra={"mirror": mirror.name, "started": started, "client": request.client})
        message = f"{mirror.name}'s sync started"
        return PushAnswer(HTTPStatus.ACCEPTED, {"result": "started", "mirror": mirror.name, "message": message})

    def _refuse(
        self, request: PushRequest, status: HTTPStatus, error: str, reason: str, mirror: str = ""
    ) -> PushAnswer:
        log.warning(
            "push refused",
            extra={
                "status": int(status),
                "reason": reason,
                "mirror": mirror[:_NAME_CHARS],
                "path": request.path[:_NAME_CHARS],
                "client": request.client,
            },
        )
        return _refusal(status, error)


def _refusal(status: HTTPStatus, error: str) -> PushAnswer:
    return PushAnswer(int(status), {"error": error})
