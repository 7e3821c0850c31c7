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
    DELETION_GUARD = 4
    INTERRUPTED = 130  # Ctrl-C or SIGTERM, as shells report SIGINT


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


class StorageError(MirrorkeeperError):
    """S3 refused or kept failing a request after retries."""


class LockHeldError(MirrorkeeperError):
    """Another sync holds an unexpired lease on this mirror."""

    exit_code = ExitCode.LOCKED


class LockLostError(MirrorkeeperError):
    """Our lease was taken over while we were running (we were too slow to renew it)."""


class DeletionGuardError(MirrorkeeperError):
    """The plan would delete too much, or the upstream listing cannot be trusted for deletes."""

    exit_code = ExitCode.DELETION_GUARD


class StateConflictError(StorageError):
    """A state object changed between our read and our conditional write (another run wrote it)."""
