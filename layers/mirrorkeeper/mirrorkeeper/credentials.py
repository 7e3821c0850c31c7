"""Secrets by reference: a config file names where a secret is kept (``file:PATH``, ``env:VARIABLE``,
``secretsmanager:ARN-OR-NAME``), never the secret. Read when a command needs it, never logged."""

import os

from mirrorkeeper.config import AwsConfig
from mirrorkeeper.errors import ConfigError


def read_secret(ref: str, aws: AwsConfig, what: str) -> str:
    """The secret ``ref`` points to; ``what`` names it in errors (``[mirrors.openvz] rsync_password``)."""
    scheme, _, where = ref.partition(":")
    if scheme == "file":
        try:
            with open(where, encoding="utf-8") as handle:
                secret = handle.read().strip()
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read {where} ({exc.strerror}); fix the file or the reference") from None
    elif scheme == "env":
        secret = os.environ.get(where, "")
        if not secret:
            raise ConfigError(f"{what}: the environment variable {where} is not set; set it or fix the reference")
    elif scheme == "secretsmanager":
        from mirrorkeeper.aws import service_client
        from mirrorkeeper.s3errors import aws_errors

        with aws_errors("Secrets Manager", f"read the secret {where}"):
            secret = str(service_client("secretsmanager", aws).get_secret_value(SecretId=where).get("SecretString", ""))
    else:
        raise ConfigError(f"{what}: {scheme!r} is not a kind of secret reference (file:, env:, secretsmanager:)")
    if not secret:
        raise ConfigError(f"{what}: the secret at {ref.split(':', 1)[0]}:... is empty")
    return secret
