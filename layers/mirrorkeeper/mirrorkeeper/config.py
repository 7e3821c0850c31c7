"""Configuration, parsed once, in one place.

Every setting is looked up in the same order: command-line flag, then environment variable
``MIRRORKEEPER_<NAME>``, then the optional TOML config file (``--config`` or
``MIRRORKEEPER_CONFIG``), then the default. An invalid value is a :class:`ConfigError` that
names where the value came from, so the operator knows which knob to turn.
"""

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mirrorkeeper.errors import ConfigError
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.tiers import DEFAULT_LATE_PATTERNS, LateTiers

ENV_PREFIX = "MIRRORKEEPER_"
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true/false")


def parse_size(text: str) -> int:
    """'512M', '2G', '1048576', '1.5g' → bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not match:
        raise ValueError("expected a size such as 512M or 2G")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def parse_percent(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 100:
        raise ValueError("expected a percentage from 0 to 100")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("expected a whole number of at least 1")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("expected a number above 0")
    return value


@dataclass(frozen=True)
class Sources:
    """Where setting values come from, in precedence order."""

    flags: Mapping[str, Any]
    environ: Mapping[str, str]
    file: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> "Sources":
        env = os.environ if environ is None else environ
        config_path = flags.get("config") or env.get(ENV_PREFIX + "CONFIG")
        return cls(flags=flags, environ=env, file=_read_config_file(config_path) if config_path else {})

    def get[T](self, name: str, parse: Callable[[str], T], default: T) -> T:
        """The value of setting ``name`` (snake_case): flag, env, file, default."""
        flag = self.flags.get(name)
        if flag is not None:
            return _convert(flag, parse, f"--{name.replace('_', '-')}")
        env_name = ENV_PREFIX + name.upper()
        if env_name in self.environ:
            return _convert(self.environ[env_name], parse, env_name)
        for key in (name, name.replace("_", "-")):
            if key in self.file:
                return _convert(self.file[key], parse, f"config file key {key!r}")
        return default


def _convert[T](raw: Any, parse: Callable[[str], T], source: str) -> T:
    if not isinstance(raw, str) and not isinstance(raw, list):
        raw = str(raw).lower() if isinstance(raw, bool) else str(raw)
    try:
        return parse(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}={raw!r} is invalid: {exc}") from None


def _read_config_file(path: str) -> dict[str, Any]:
    import tomllib  # here, not at the top: most runs (the container's) are configured by environment alone

    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; fix --config / MIRRORKEEPER_CONFIG") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def parse_upstream(text: str) -> str:
    """Validate an rsync:// URL and give it the trailing slash that means 'the module's contents'."""
    parts = urlsplit(text.strip())
    if parts.scheme != "rsync":
        raise ValueError("the upstream must be an rsync:// URL, such as rsync://mirror.example.org/module/")
    if not parts.hostname:
        raise ValueError("the upstream URL has no host")
    if not parts.path.strip("/"):
        raise ValueError("the upstream URL names no module: add it, as in rsync://HOST/MODULE/")
    if parts.query or parts.fragment:
        raise ValueError("the upstream URL must not carry ?query or #fragment")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("the upstream URL's port is not a number from 1 to 65535") from None
    url = text.strip()
    return url if url.endswith("/") else url + "/"


def parse_bucket(text: str) -> str:
    if not _BUCKET_RE.match(text) or ".." in text:
        raise ValueError("not a valid S3 bucket name (3-63 lowercase letters, digits, dots and hyphens)")
    return text


def parse_late_patterns(text: str | list[Any]) -> LateTiers:
    """'Packages*,Sources*;Release,InRelease' → tiers published one after another."""
    tiers = text if isinstance(text, list) else text.split(";")
    parsed = tuple(
        tuple(p.strip() for p in (tier if isinstance(tier, list) else str(tier).split(",")) if p.strip())
        for tier in tiers
    )
    return tuple(tier for tier in parsed if tier)


@dataclass(frozen=True)
class AwsConfig:
    endpoint_url: str | None
    region: str
    max_attempts: int = 10


def load_aws_config(sources: Sources) -> AwsConfig:
    endpoint = sources.get("endpoint_url", str, "") or sources.environ.get("AWS_ENDPOINT_URL") or None
    region = (
        sources.get("region", str, "")
        or sources.environ.get("AWS_REGION")
        or sources.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1"
    )
    attempts = sources.get("s3_max_attempts", positive_int, AwsConfig.max_attempts)
    return AwsConfig(endpoint_url=endpoint, region=region, max_attempts=attempts)


def load_layout(sources: Sources) -> MirrorLayout:
    bucket = sources.get("bucket", parse_bucket, "")
    if not bucket:
        raise ConfigError("no bucket given: pass --bucket NAME or set MIRRORKEEPER_BUCKET")
    return MirrorLayout.create(bucket, sources.get("prefix", str, ""))


@dataclass(frozen=True)
class SyncConfig:
    upstream: str
    layout: MirrorLayout
    aws: AwsConfig
    max_delete_percent: float = 10.0
    force_delete: bool = False
    dry_run: bool = False
    staging_dir: Path | None = None
    staging_bytes: int = 8 * 1024**3
    upload_concurrency: int = 16
    multipart_threshold: int = 64 * 1024**2
    lock_ttl: float = 900.0
    late_patterns: LateTiers = DEFAULT_LATE_PATTERNS
    trace_path: str = ".mirrorkeeper/trace"
    mirror_name: str = ""
    rsync_command: str = "rsync"
    rsync_timeout: int = 300


def load_sync_config(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> SyncConfig:
    sources = Sources.load(flags, environ)
    upstream = sources.get("upstream", parse_upstream, "")
    if not upstream:
        raise ConfigError("no upstream given: pass --upstream rsync://HOST/MODULE/ or set MIRRORKEEPER_UPSTREAM")
    layout = load_layout(sources)
    staging = sources.get("staging_dir", str, "")
    trace_path = sources.get("trace_path", str, SyncConfig.trace_path).strip("/")
    if not trace_path or any(part in ("", ".", "..") for part in trace_path.split("/")):
        raise ConfigError(f"trace path {trace_path!r} must be a relative path such as .mirrorkeeper/trace")
    return SyncConfig(
        upstream=upstream,
        layout=layout,
        aws=load_aws_config(sources),
        max_delete_percent=sources.get("max_delete_percent", parse_percent, SyncConfig.max_delete_percent),
        force_delete=sources.get("force_delete", parse_bool, False),
        dry_run=sources.get("dry_run", parse_bool, False),
        staging_dir=Path(staging) if staging else None,
        staging_bytes=sources.get("staging_bytes", parse_size, SyncConfig.staging_bytes),
        upload_concurrency=sources.get("upload_concurrency", positive_int, SyncConfig.upload_concurrency),
        multipart_threshold=sources.get("multipart_threshold", parse_size, SyncConfig.multipart_threshold),
        lock_ttl=sources.get("lock_ttl", positive_float, SyncConfig.lock_ttl),
        late_patterns=sources.get("late_patterns", parse_late_patterns, DEFAULT_LATE_PATTERNS),
        trace_path=trace_path,
        mirror_name=sources.get("mirror_name", str, "") or layout.bucket,
        rsync_command=sources.get("rsync_command", str, SyncConfig.rsync_command),
        rsync_timeout=sources.get("rsync_timeout", positive_int, SyncConfig.rsync_timeout),
    )


def parse_port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("expected a TCP port from 0 to 65535 (0 picks a free one)")
    return value


def parse_port_range(text: str) -> tuple[int, int]:
    """'60000-60099' → (60000, 60099)."""
    first, sep, last = text.partition("-")
    if not sep:
        raise ValueError("expected FIRST-LAST, such as 60000-60099")
    low, high = parse_port(first.strip()), parse_port(last.strip())
    if not 0 < low <= high:
        raise ValueError("expected FIRST-LAST with 0 < FIRST <= LAST")
    return low, high


def parse_seconds(text: str) -> float:
    """A duration that may be 0 (off), such as a cache TTL."""
    value = float(text)
    if not value >= 0:  # also refuses NaN
        raise ValueError("expected a number of seconds, 0 or more")
    return value


@dataclass(frozen=True)
class ServeConfig:
    """Settings of ``serve-http`` and ``serve-ftp`` (the FTP-only ones are ignored by HTTP)."""

    layout: MirrorLayout
    aws: AwsConfig
    host: str = "127.0.0.1"
    port: int = 8080
    max_connections: int = 256
    max_connections_per_ip: int = 16
    idle_timeout: float = 300.0
    mirror_name: str = ""
    passive_ports: tuple[int, int] | None = None
    masquerade_address: str | None = None
    # Like CloudFront's default and maximum TTL: short enough that a sync is visible within seconds.
    cache_ttl: float = 10.0
    # FTP: keep the server's session threads on one CPU (GIL hand-overs between CPUs cost more than
    # the work; see commands/serve_ftp.keep_on_one_cpu).
    one_cpu: bool = True


def load_serve_config(
    flags: Mapping[str, Any], default_port: int, environ: Mapping[str, str] | None = None
) -> ServeConfig:
    sources = Sources.load(flags, environ)
    layout = load_layout(sources)
    return ServeConfig(
        layout=layout,
        aws=load_aws_config(sources),
        host=sources.get("host", str, ServeConfig.host),
        port=sources.get("port", parse_port, default_port),
        max_connections=sources.get("max_connections", positive_int, ServeConfig.max_connections),
        max_connections_per_ip=sources.get("max_connections_per_ip", positive_int, ServeConfig.max_connections_per_ip),
        idle_timeout=sources.get("idle_timeout", positive_float, ServeConfig.idle_timeout),
        mirror_name=sources.get("mirror_name", str, "") or layout.bucket,
        passive_ports=sources.get("passive_ports", parse_port_range, None),
        masquerade_address=sources.get("masquerade_address", str, "") or None,
        cache_ttl=sources.get("cache_ttl", parse_seconds, ServeConfig.cache_ttl),
        one_cpu=sources.get("one_cpu", parse_bool, ServeConfig.one_cpu),
    )


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("expected a whole number of at least 0")
    return value


def parse_duration(text: str) -> float:
    """'3600', '90s', '45m', '1h', '2d' → seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise ValueError("expected a duration above 0, such as 3600, 90s, 45m, 1h or 2d")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def parse_endpoint_url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        url = text.strip()
        if not url:
            return ""
        parts = urlsplit(url)
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(f"expected a {' or '.join(s + '://HOST[:PORT]/' for s in schemes)} URL")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("the port is not a number from 1 to 65535") from None
        return url.rstrip("/") + "/"

    return parse


@dataclass(frozen=True)
class VerifyConfig:
    """Settings of ``mirrorkeeper verify`` and of the three verification Lambdas (same names, same
    environment variables, so the local chain and the deployed workflow read one configuration)."""

    layout: MirrorLayout
    aws: AwsConfig
    mirror_name: str = ""
    http_url: str = ""
    ftp_url: str = ""
    rsync_url: str = ""
    sync_interval: float = 3600.0
    topic_arn: str = ""
    metrics_namespace: str = "Mirrorkeeper"
    trace_path: str = SyncConfig.trace_path
    late_patterns: LateTiers = DEFAULT_LATE_PATTERNS
    probe_timeout: float = 10.0
    probe_concurrency: int = 8
    sample_random: int = 8
    sample_newest: int = 4
    sample_late: int = 4
    sample_download: int = 3
    download_max_bytes: int = 8 * 1024**2
    reminder_interval: float = 6 * 3600.0
    cache_grace: float = 3600.0

    @property
    def endpoints(self) -> dict[str, str]:
        """Configured endpoints by protocol, in probing order."""
        found = {"http": self.http_url, "ftp": self.ftp_url, "rsync": self.rsync_url}
        return {protocol: url for protocol, url in found.items() if url}


def load_verify_config(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> VerifyConfig:
    sources = Sources.load(flags, environ)
    layout = load_layout(sources)
    config = VerifyConfig(
        layout=layout,
        aws=load_aws_config(sources),
        mirror_name=sources.get("mirror_name", str, "") or layout.bucket,
        http_url=sources.get("http_url", parse_endpoint_url(("http", "https")), ""),
        ftp_url=sources.get("ftp_url", parse_endpoint_url(("ftp",)), ""),
        rsync_url=sources.get("rsync_url", parse_endpoint_url(("rsync",)), ""),
        sync_interval=sources.get("sync_interval", parse_duration, VerifyConfig.sync_interval),
        topic_arn=sources.get("topic_arn", str, "").strip(),
        metrics_namespace=sources.get("metrics_namespace", str, VerifyConfig.metrics_namespace),
        trace_path=sources.get("trace_path", str, VerifyConfig.trace_path).strip("/"),
        late_patterns=sources.get("late_patterns", parse_late_patterns, DEFAULT_LATE_PATTERNS),
        probe_timeout=sources.get("probe_timeout", parse_duration, VerifyConfig.probe_timeout),
        probe_concurrency=sources.get("probe_concurrency", positive_int, VerifyConfig.probe_concurrency),
        sample_random=sources.get("sample_random", non_negative_int, VerifyConfig.sample_random),
        sample_newest=sources.get("sample_newest", non_negative_int, VerifyConfig.sample_newest),
        sample_late=sources.get("sample_late", non_negative_int, VerifyConfig.sample_late),
        sample_download=sources.get("sample_download", non_negative_int, VerifyConfig.sample_download),
        download_max_bytes=sources.get("download_max_bytes", parse_size, VerifyConfig.download_max_bytes),
        reminder_interval=sources.get("reminder_interval", parse_duration, VerifyConfig.reminder_interval),
        cache_grace=sources.get("cache_grace", parse_duration, VerifyConfig.cache_grace),
    )
    if not config.endpoints:
        raise ConfigError(
            "no endpoint to probe: pass --http-url and/or --ftp-url (or set MIRRORKEEPER_HTTP_URL / "
            "MIRRORKEEPER_FTP_URL)"
        )
    if config.topic_arn and not config.topic_arn.startswith("arn:"):
        raise ConfigError(f"topic ARN {config.topic_arn!r} is not an ARN (arn:aws:sns:REGION:ACCOUNT:NAME)")
    return config
