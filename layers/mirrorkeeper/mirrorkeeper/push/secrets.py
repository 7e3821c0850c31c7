"""Each mirror's push secret, read by reference (``credentials.read_secret``) and kept a minute: the
endpoint checks a signature per push, and Secrets Manager takes tens of milliseconds and charges for
each read. A rotated secret is taken up within that minute."""

import time
from collections.abc import Callable

from mirrorkeeper.config import AwsConfig, PushMirror
from mirrorkeeper.credentials import read_secret

KEEP_SECONDS = 60.0


class Secrets:
    def __init__(self, aws: AwsConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.aws, self.clock = aws, clock
        self._kept: dict[str, tuple[bytes, float]] = {}  # reference → (secret, when read)

    def of(self, mirror: PushMirror) -> bytes:
        """``mirror``'s push secret; a ConfigError (or StorageError, from Secrets Manager) when it cannot be read."""
        kept = self._kept.get(mirror.secret)
        if kept is not None and self.clock() - kept[1] < KEEP_SECONDS:
            return kept[0]
        what = f"[mirrors.{mirror.table}] push secret" if mirror.table else "the push secret"
        secret = read_secret(mirror.secret, self.aws, what).encode()
        self._kept[mirror.secret] = (secret, self.clock())
        return secret
