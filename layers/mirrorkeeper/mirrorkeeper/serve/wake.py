"""A nudge when a sync ends: the stack sends the sync task's STOPPED event to an SQS queue as well as
to the verify workflow (template.yaml, ``RsyncWakeQueue``), and serve-rsync long-polls that queue, so a
published change is applied seconds after the sync instead of at the next ``--poll-interval``.

A message is only a nudge: its content is not read, and a lost one costs no more than the wait for
the next poll, which goes on regardless (docs/rsync.md, "Following the mirror").
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mirrorkeeper.errors import ConfigError
from mirrorkeeper.s3errors import error_code

log = logging.getLogger(__name__)

LONG_POLL_SECONDS = 20  # SQS's longest wait: one request per 20 s while nothing happens
RETRY_SECONDS = 30.0  # after a failed receive: the poll interval still applies meanwhile


class WakeQueue:
    """Sets ``nudged`` whenever a message arrives on the queue at ``url`` (and deletes it)."""

    def __init__(self, client: Any, url: str, nudged: threading.Event) -> None:
        self.client, self.url, self.nudged = client, url, nudged

    def start(self) -> None:
        """One receive at once, so that a wrong URL or a role without sqs:ReceiveMessage is said at start
        (ConfigError, exit 2), then the long poll in the background."""
        try:
            self._receive(wait=0)
        except (ClientError, BotoCoreError) as exc:
            raise ConfigError(
                f"cannot read the wake-up queue {self.url}: {error_code(exc) or exc}; fix --wake-queue-url, or "
                "give the task role sqs:ReceiveMessage and sqs:DeleteMessage on it"
            ) from None
        threading.Thread(target=self._listen, name="wake-queue", daemon=True).start()

    def _listen(self) -> None:
        while True:
            try:
                self._receive(wait=LONG_POLL_SECONDS)
            except (ClientError, BotoCoreError) as exc:
                log.warning(
                    "cannot read the wake-up queue; changes are applied at the next poll meanwhile",
                    extra={"queue": self.url, "error": error_code(exc) or str(exc)},
                )
                time.sleep(RETRY_SECONDS)

    def _receive(self, wait: int) -> None:
        got = self.client.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
        messages = got.get("Messages", [])
        if not messages:
            return
        # Deleted before the nudge: the look it starts covers every sync that ended until now.
        self.client.delete_message_batch(
            QueueUrl=self.url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
        )
        log.info("woken by a sync's completion", extra={"messages": len(messages)})
        self.nudged.set()
