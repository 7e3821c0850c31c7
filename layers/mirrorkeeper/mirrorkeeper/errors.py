"""Typed failures. Each carries its exit code and a sentence that says what to do.

The command line maps them to exit codes; the health model maps them to alert text. Nothing
matches on message text.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    LOCKED = 3
    DELETION_GUARD = 4  # deletions held back; everything else was published
    PARTIAL = 5  # published, but some paths were skipped (the report lists them)
    UPSTREAM_BUSY = 6  # upstream is mid-update: nothing beyond data was published
    INTERRUPTED = 130  # Ctrl-C or SIGTERM, as shells report SIGINT

    @property
    def severity(self) -> int:
        """How serious, for reporting the worst of several runs (``sync --all``): a failure outranks a
        misconfiguration, which outranks held deletions, skipped paths, a busy upstream and a held lease."""
        return _SEVERITY.index(self)


_SEVERITY = [
    ExitCode.OK,
    ExitCode.LOCKED,
    ExitCode.UPSTREAM_BUSY,
    ExitCode.PARTIAL,
    ExitCode.DELETION_GUARD,
    ExitCode.INTERRUPTED,
    ExitCode.USAGE,
    ExitCode.FAILURE,
]


def worst(codes: "list[int]") -> int:
    """The most serious of several exit codes (0 for none); unknown codes count as failures."""
    known = [ExitCode(c) if c in ExitCode._value2member_map_ else ExitCode.FAILURE for c in codes]
    return int(max(known, key=lambda c: c.severity, default=ExitCode.OK))


class MirrorkeeperError(Exception):
    """Base class: a failure the operator can act on."""

    exit_code: ExitCode = ExitCode.FAILURE


class ConfigError(MirrorkeeperError):
    """A flag, environment variable or config file value is missing or malformed."""

    exit_code = ExitCode.USAGE


class UpstreamError(MirrorkeeperError):
    """The upstream rsync server could not be reached or stopped answering."""


class StagingFullError(MirrorkeeperError):
    """The local staging directory ran out of space."""


class ReplicaFullError(MirrorkeeperError):
    """serve-rsync's replica directory has no room for what the manifest needs."""


class DaemonStoppedError(MirrorkeeperError):
    """The rsync daemon serve-rsync runs ended on its own: serve-rsync ends too, so that whatever
    runs it (ECS) starts it again rather than keep a task that serves nothing."""


class StorageError(MirrorkeeperError):
    """S3 refused or kept failing a request after retries. ``per_object`` when the refusal concerns
    that one object (a key S3 will not take) rather than the store as a whole (unreachable, no
    bucket, no permission): the sync then skips the object and goes on."""

    per_object: bool = False

    def __init__(self, message: str, per_object: bool = False) -> None:
        super().__init__(message)
        self.per_object = per_object


class StoreUnreachableError(StorageError):
    """The S3 endpoint refused connections or did not resolve: no amount of retrying will help soon."""


class LockHeldError(MirrorkeeperError):
    """Another sync holds an unexpired lease on this mirror."""

    exit_code = ExitCode.LOCKED


class LockLostError(MirrorkeeperError):
    """Our lease was taken over while we were running (we were too slow to renew it)."""


class DeletionGuardError(MirrorkeeperError):
    """The plan would delete too much, or the upstream listing cannot be trusted for deletes."""

    exit_code = ExitCode.DELETION_GUARD


class UpstreamBusyError(MirrorkeeperError):
    """Upstream is mid-update (its update marker, or its trace changing while we fetched)."""

    exit_code = ExitCode.UPSTREAM_BUSY


class StateConflictError(StorageError):
    """A state object changed between our read and our conditional write (another run wrote it)."""


class HealthNotPublishedError(MirrorkeeperError):
    """A mirror's publish-health step failed: its status page and metrics are stale (the other
    mirrors' and the host's were published)."""
