"""Flags every command shares, so their defaults agree (same --bucket, same layout: docs/architecture.md)."""

import argparse


def add_location_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where the mirror lives")
    group.add_argument("--bucket", help="S3 bucket holding the mirror [MIRRORKEEPER_BUCKET]")
    group.add_argument(
        "--prefix",
        help="key prefix inside the bucket; the served tree is PREFIX/pub/, private state "
        "PREFIX/state/ (default: none) [MIRRORKEEPER_PREFIX]",
    )
    group.add_argument(
        "--endpoint-url",
        help="S3-compatible endpoint, e.g. a local moto server [MIRRORKEEPER_ENDPOINT_URL or AWS_ENDPOINT_URL]",
    )
    group.add_argument("--region", help="AWS region (default: AWS_REGION or us-east-1) [MIRRORKEEPER_REGION]")
    group.add_argument(
        "--s3-max-attempts",
        help="attempts per S3 request, with adaptive backoff on throttling and 5xx (default: 10) "
        "[MIRRORKEEPER_S3_MAX_ATTEMPTS]",
    )
    group.add_argument(
        "--config", help="TOML file with any of these settings (flags and environment win) [MIRRORKEEPER_CONFIG]"
    )


def add_logging_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=("auto", "text", "json"),
        default="auto",
        help="text on a terminal, JSON otherwise (default: auto)",
    )
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


def flags_of(args: argparse.Namespace) -> dict[str, object]:
    """The namespace as the settings mapping config.Sources expects (unset flags are None)."""
    return {k: v for k, v in vars(args).items() if k not in ("command", "handler", "log_format", "log_level")}
