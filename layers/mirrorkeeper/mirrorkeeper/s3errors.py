"""What an S3 (or other AWS) failure means, decided in one place.

botocore reports the same condition under several codes: a missing key is ``NoSuchKey`` from a
GET but a bare ``404`` from a HEAD (which has no body to name it); a failed precondition is
``PreconditionFailed`` / ``412``, or ``ConditionalRequestConflict`` / ``409`` when two conditional
writes race. Every caller asks :func:`classify` (or one of its shorthands) instead of matching
codes itself, so a quirk of one server is fixed for all of them at once.

:func:`s3_errors` and :func:`aws_errors` turn whatever is left after botocore's retries into a
:class:`~mirrorkeeper.errors.StorageError` whose message says what failed and what to check.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

from botocore.exceptions import BotoCoreError, ClientError

from mirrorkeeper.errors import StorageError


class S3Failure(StrEnum):
    MISSING = "missing"  # the key (or version) does not exist
    NO_BUCKET = "no-bucket"  # the bucket itself does not exist: a configuration error, never "missing"
    CONFLICT = "conflict"  # a conditional request's precondition failed, or two writes raced
    THROTTLED = "throttled"  # slow down and retry
    ACCESS_DENIED = "access-denied"  # the credentials or the role do not allow it
    NOT_MODIFIED = "not-modified"  # a conditional GET (If-None-Match) found the version the caller has
    OTHER = "other"


_CODES: dict[S3Failure, frozenset[str]] = {
    S3Failure.MISSING: frozenset({"NoSuchKey", "404", "NotFound", "NoSuchVersion"}),
    S3Failure.NO_BUCKET: frozenset({"NoSuchBucket"}),
    S3Failure.CONFLICT: frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}),
    S3Failure.THROTTLED: frozenset(
        {
            "SlowDown",
            "503",
            "Throttling",
            "ThrottlingException",
            "RequestLimitExceeded",
            "TooManyRequests",
            # CloudFront: more invalidation paths in progress than it allows (3,000 files, 15 wildcards)
            "TooManyInvalidationsInProgress",
        }
    ),
    S3Failure.ACCESS_DENIED: frozenset({"AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId"}),
    S3Failure.NOT_MODIFIED: frozenset({"304", "NotModified"}),
}


def error_code(exc: BaseException) -> str:
    """The service's error code of a ClientError ('' for anything else)."""
    if not isinstance(exc, ClientError):
        return ""
    return str(exc.response.get("Error", {}).get("Code", ""))


def classify(exc: BaseException) -> S3Failure:
    code = error_code(exc)
    for failure, codes in _CODES.items():
        if code in codes:
            return failure
    return S3Failure.OTHER


# Failures that concern one object (a key S3 will not take, a body it rejects, an error that stayed on
# that request): a sync skips the object and goes on. The others concern the whole store.
PER_OBJECT = frozenset({S3Failure.MISSING, S3Failure.CONFLICT, S3Failure.OTHER})


def is_missing(exc: BaseException) -> bool:
    return classify(exc) is S3Failure.MISSING


def is_conflict(exc: BaseException) -> bool:
    return classify(exc) is S3Failure.CONFLICT


@contextmanager
def s3_errors(action: str) -> Iterator[None]:
    """Turn botocore failures (after its retries) into a StorageError that says what failed."""
    try:
        yield
    except ClientError as exc:
        failure = classify(exc)
        raise StorageError(
            f"S3 refused to {action}: {error_code(exc)}: {exc}; {_hint(failure)}, then rerun",
            per_object=failure in PER_OBJECT,
        ) from None
    except BotoCoreError as exc:
        raise StorageError(
            f"the S3 request to {action} did not complete: {exc}; "
            "check the credentials, --endpoint-url and the network, then rerun"
        ) from None


@contextmanager
def aws_errors(service: str, action: str) -> Iterator[None]:
    """Like :func:`s3_errors`, for the other services (CloudWatch, SNS, CloudFront...)."""
    try:
        yield
    except ClientError as exc:
        raise StorageError(
            f"{service} refused to {action}: {error_code(exc)}: {exc}; check the resource names and the role's "
            "permissions"
        ) from None
    except BotoCoreError as exc:
        raise StorageError(
            f"the {service} request to {action} did not complete: {exc}; check the credentials, "
            "--endpoint-url and the network"
        ) from None


def _hint(failure: S3Failure) -> str:
    return {
        S3Failure.NO_BUCKET: "the bucket does not exist: create it or fix --bucket",
        S3Failure.ACCESS_DENIED: "the credentials or the task role lack permission for it",
        S3Failure.THROTTLED: "S3 kept asking us to slow down after every retry",
    }.get(failure, "check the bucket, the credentials and the task role")
