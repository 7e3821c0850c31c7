"""One sync at a time: a lease object written with S3 conditional writes.

Taking the lease is ``PutObject If-None-Match: *`` (only one writer can create it). Renewing it
and taking over an expired one are ``PutObject If-Match: <etag we read>``, so of two runs that
both see an expired lease, only one wins. A background thread renews the lease every third of
its time to live; if a renewal finds the lease taken, the run stops before publishing more.

Whether a lease has expired is judged by S3's clock (the object's LastModified against the Date of
the answer), never the caller's: a holder or a newcomer with a wrong clock cannot stretch or cut
it. A holder killed with SIGKILL blocks the next run for at most its time to live (--lock-ttl,
two minutes by default); each renewal is one PutObject, counted in the run report.
"""

import logging
import socket
import threading
import time
import uuid
from types import TracebackType
from typing import Any

from mirrorkeeper.errors import LockHeldError, LockLostError, StorageError
from mirrorkeeper.state import LeaseDoc, StateStore, StoredLease

log = logging.getLogger(__name__)


def held_error(store: StateStore, current: StoredLease) -> LockHeldError:
    """The error of a run that finds ``current``, a live lease, held by another."""
    owner = f"owner {current.doc.owner[:8]} on {current.doc.host}" if current.doc else "unknown owner"
    return LockHeldError(
        f"another sync ({owner}) holds the lock until "
        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(current.expires))} (S3's clock); this run did "
        f"nothing. If that sync is dead, its lease expires by then; or delete s3://{store.bucket}/{store.lock_key}"
    )


class Lease:
    def __init__(self, store: StateStore, ttl: float, clock: Any = time.time) -> None:
        self.store, self.ttl, self.clock = store, ttl, clock
        self.owner = uuid.uuid4().hex
        self._etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._released = False
        self.lost: str | None = None
        self.renewals = 0

    def _doc(self, acquired_at: float) -> LeaseDoc:
        return LeaseDoc(self.owner, socket.gethostname(), acquired_at, self.clock() + self.ttl, self.ttl)

    def _put(self, acquired_at: float, if_match: str | None = None) -> bool:
        """Create the lease (no ``if_match``) or replace the version we read (``if_match`` = its ETag)."""
        etag = self.store.write_lease(self._doc(acquired_at), replacing=if_match)
        if etag is None:
            return False
        self._etag = etag
        return True

    def acquire(self) -> None:
        self._acquired_at = self.clock()
        if self._put(self._acquired_at):
            return
        current = self.store.read_lease()
        if current is None:
            if self._put(self._acquired_at):
                return
            raise LockHeldError("another sync took the lock just now; this run did nothing, the next one will sync")
        info = current.doc
        if not current.expired and info is not None:
            raise held_error(self.store, current)
        if not self._put(self._acquired_at, if_match=current.etag):
            raise LockHeldError("another sync took over the expired lock first; this run did nothing")
        log.warning("took over an expired sync lock", extra={"previous_owner": info.owner if info else "unreadable"})

    def start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="lease-renewal", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self._put(self._acquired_at, if_match=self._etag or ""):
                    self.lost = "another process replaced our sync lock (our lease had expired)"
                    return
                self.renewals += 1
            except StorageError as exc:
                log.warning("lease renewal failed; will retry", extra={"error": str(exc)})

    def check(self) -> None:
        """Raise if the lease was lost: called between publishing steps."""
        if self.lost:
            raise LockLostError(f"{self.lost}; stopped before publishing more. Raise --lock-ttl if runs are slow")

    def stop_renewing(self) -> None:
        """Stop the renewal thread; after this the lease changes only by ``release()``."""
        self._stop.set()
        if self._thread:
            self._thread.join()

    @property
    def will_release(self) -> bool:
        """Whether ``release()`` is still to send its DELETE (we hold the lease and have not let go)."""
        return self._etag is not None and not self.lost and not self._released

    def release(self) -> None:
        self.stop_renewing()
        etag = self._etag
        if etag is None or not self.will_release:
            return
        self._released = True
        self.store.delete_lease(etag)

    def __enter__(self) -> "Lease":
        self.acquire()
        self.start_renewing()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
