"""``mirrorkeeper push``: tell a mirror's push endpoint that upstream has published (what an upstream runs)."""

from __future__ import annotations

import argparse
import http.client
import json
import secrets
import time
from urllib.parse import urlsplit

from mirrorkeeper.config import PUSH, AwsConfig, add_flags, default, flags_of, require, resolve
from mirrorkeeper.errors import ExitCode, MirrorkeeperError

DESCRIPTION = """\
Send one signed push: POST <url>push/<mirror> with X-Mirrorkeeper-Timestamp (now, epoch seconds)
and X-Mirrorkeeper-Signature (sha256=HMAC-SHA256 of '<timestamp>.<body>' under the secret in
--secret-file). The body is a small JSON document with a random nonce, so no two pushes carry the
same signature (the endpoint refuses a signature it has seen). Prints what the endpoint answered.

exit codes:
  0  accepted (202): the mirror's sync started, or runs once more after the one running
  1  refused: 401 bad signature (check the secret), 403 timestamp off by more than 5 minutes
     (check this machine's clock) or signature used already, 404 no such mirror, 413 body too large
  2  usage or configuration error (the URL, an unreadable --secret-file)
  3  try again later: 429 too many pushes this minute, 5xx, or the endpoint could not be reached
"""

_LATER = ExitCode.LOCKED  # 3: "nothing happened, a later try will do", as for a sync that found the lease held


class PushRefusedError(MirrorkeeperError):
    """The endpoint refused the push (4xx): the sender's secret, clock or URL needs fixing."""


class PushLaterError(MirrorkeeperError):
    """The endpoint could not take the push now (429, 5xx, unreachable): send it again later."""

    exit_code = _LATER


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        PUSH,
        help="send a signed push to a mirror's push endpoint, so its sync starts now",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flags(parser, PUSH)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mirrorkeeper.credentials import read_secret
    from mirrorkeeper.push.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

    values = resolve(PUSH, flags_of(args))
    url = require(values, "url", "https://ENDPOINT/")
    mirror = require(values, "mirror", "NAME")
    # The endpoint reads its copy with the same function: both strip the same whitespace.
    secret_file = require(values, "secret_file", "FILE")
    secret = read_secret(f"file:{secret_file}", AwsConfig(None, default("region")), "--secret-file").encode()
    body = json.dumps({"mirror": mirror, "nonce": secrets.token_hex(16)}).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }
    target = f"{url}push/{mirror}"
    status, answer = _post(target, body, headers, values["timeout"])
    if status == 202:
        print(f"{status} {answer.get('result', 'accepted')}: {answer.get('message', '')}".rstrip(": "))
        return 0
    said = answer.get("error") or "no reason given"
    if status == 429 or status >= 500:
        wait = f" (the endpoint asks for {answer['retry_after']} s)" if "retry_after" in answer else ""
        raise PushLaterError(f"{target} answered {status}: {said}; send the push again later{wait}")
    raise PushRefusedError(f"{target} answered {status}: {said}")


def _post(target: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, dict[str, object]]:
    """The endpoint's status and JSON answer ({} when it sent none)."""
    parts = urlsplit(target)
    connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_type(parts.netloc, timeout=timeout)
    try:
        connection.request("POST", parts.path, body, headers)
        response = connection.getresponse()
        text = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise PushLaterError(f"cannot reach {target}: {exc}; check --url and the network, then push again") from None
    finally:
        connection.close()
    try:
        answer = json.loads(text)
    except ValueError:
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    if response.getheader("Retry-After"):
        answer["retry_after"] = response.getheader("Retry-After")
    return response.status, answer
