"""Every setting, declared once: its name, parser (with its range), default, help and the commands
that take it. From one :class:`Setting` come the command-line flag (``--max-delete-percent``), the
environment variable (``MIRRORKEEPER_MAX_DELETE_PERCENT``), the config file key
(``max_delete_percent`` or ``max-delete-percent``), the help text with its default, and the check.

A value is looked up in this order: flag, environment variable, the TOML config file (``--config``
or ``MIRRORKEEPER_CONFIG``), a command's own fallback source (``announce`` reads a stack's
outputs), the default. A bad value is a :class:`ConfigError` that names where it came from, so the
operator knows which knob to turn; the command line turns it into one line and exit 2.
"""

import argparse
import ipaddress
import math
import os
import re
import shlex
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mirrorkeeper.errors import ConfigError
from mirrorkeeper.layout import DEFAULT_TIMESTAMP_PATH, DEFAULT_TRACE_PATH, MirrorLayout
from mirrorkeeper.tiers import DEFAULT_LATE_PATTERNS, LateTiers

ENV_PREFIX = "MIRRORKEEPER_"
MAX_CONNECTIONS_PER_IP = 16  # serve-ftp gives fewer when it has fewer passive ports (sessions_per_address)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

SYNC = "sync"
SERVE_HTTP = "serve-http"
SERVE_FTP = "serve-ftp"
SERVE_RSYNC = "serve-rsync"
VERIFY = "verify"
ANNOUNCE = "announce"
MIRRORS = "mirrors"
SERVE_PUSH = "serve-push"
PUSH = "push"
SERVE = frozenset({SERVE_HTTP, SERVE_FTP})
# Every command that works on the bucket (``push`` only talks to a push endpoint).
ALL = frozenset({SYNC, SERVE_HTTP, SERVE_FTP, SERVE_RSYNC, VERIFY, ANNOUNCE, MIRRORS, SERVE_PUSH})
# What every front end takes: where it listens, how many it serves and for how long.
LISTENERS = SERVE | {SERVE_RSYNC}
# Commands that act on one mirror of a host (or each of them in turn).
PER_MIRROR = frozenset({SYNC, VERIFY, ANNOUNCE, MIRRORS})
# serve-push answers for every mirror of the host, so it reads each one's place and state, never --mirror.
EACH_MIRROR = PER_MIRROR | {SERVE_PUSH}

# -- parsers: text (or a TOML value as text) → value, ValueError with a sentence otherwise -------


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true/false")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def count(low: int = 1, high: int = 1_000_000) -> Callable[[str], int]:
    """A whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise ValueError(f"expected a whole number from {low} to {high}") from None
        if not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return value

    return parse


def positive_int(text: str) -> int:
    return count(1)(text)


def non_negative_int(text: str) -> int:
    return count(0)(text)


def percent(text: str) -> float:
    value = _finite(text)
    if not 0 <= value <= 100:
        raise ValueError("expected a percentage from 0 to 100")
    return value


parse_percent = percent


def parse_size(text: str) -> int:
    """'512M', '2G', '1048576', '1.5g' → bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not match:
        raise ValueError("expected a size such as 512M or 2G")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def size(low: int = 0, high: int = 1024**5) -> Callable[[str], int]:
    """A size in bytes from ``low`` to ``high``, written like 512M or 2G."""

    def parse(text: str) -> int:
        value = parse_size(text)
        if not low <= value <= high:
            raise ValueError(f"expected a size from {_show_size(low)} to {_show_size(high)}")
        return value

    return parse


def _show_size(value: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if value >= _SIZE_UNITS[unit.lower()] and value % _SIZE_UNITS[unit.lower()] == 0:
            return f"{value // _SIZE_UNITS[unit.lower()]}{unit}"
    return str(value)


def parse_duration(text: str) -> float:
    """'3600', '90s', '45m', '1h', '2d' → seconds, above 0."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text).lower())
    if not match or float(match.group(1)) <= 0:
        raise ValueError("expected a duration above 0, such as 3600, 90s, 45m, 1h or 2d")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def duration(low: float = 0.0, high: float = 30 * 86400.0, zero: bool = False) -> Callable[[str], float]:
    """Seconds (or 90s, 45m, 1h, 2d) above ``low`` and at most ``high``; ``zero`` also allows 0 (off)."""

    def parse(text: str) -> float:
        if zero and re.fullmatch(r"\s*0+(\.0*)?\s*[smhd]?\s*", str(text).lower()):
            return 0.0
        try:
            value = parse_duration(text)
        except ValueError:
            if zero:
                raise ValueError("expected 0 (off) or a duration such as 3600, 90s, 45m, 1h or 2d") from None
            raise
        if not low < value <= high:
            lowest = "0 (off) or more" if zero else f"above {low:g} s"
            raise ValueError(f"expected a duration {lowest} and at most {high:g} s")
        return value

    return parse


def parse_seconds(text: str) -> float:
    """A duration that may be 0 (off), such as a cache TTL."""
    return duration(zero=True)(text)


def choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = str(text).strip()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return value

    parse.options = options  # type: ignore[attr-defined]  # shown in --help as {a,b,c}
    return parse


def plain(value: str) -> str:
    return str(value).strip()


def parse_upstream(text: str) -> str:
    """Validate an rsync:// URL and give it the trailing slash that means 'the module's contents'."""
    parts = urlsplit(text.strip())
    if parts.password is not None:
        raise ValueError(
            "the upstream URL carries a password in clear: give the user in rsync_user and the password as a "
            "reference in rsync_password (file:, env: or secretsmanager:)"
        )
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
    value = str(text).strip()
    if value and (not _BUCKET_RE.match(value) or ".." in value):
        raise ValueError("not a valid S3 bucket name (3-63 lowercase letters, digits, dots and hyphens)")
    return value


def parse_late_patterns(text: str | list[Any]) -> LateTiers:
    """'Packages*,Sources*;Release,InRelease' → tiers published one after another."""
    tiers = text if isinstance(text, list) else text.split(";")
    parsed = tuple(
        tuple(p.strip() for p in (tier if isinstance(tier, list) else str(tier).split(",")) if p.strip())
        for tier in tiers
    )
    for pattern in (p for tier in parsed for p in tier):
        # Patterns match file names, never paths: one with a '/' would silently match nothing.
        if "/" in pattern or any(ord(c) < 32 for c in pattern):
            raise ValueError(f"pattern {pattern!r} must be a file name pattern such as Packages* (no '/')")
    tiers_given = tuple(tier for tier in parsed if tier)
    if not tiers_given:
        # Without a late tier index files would be published with the data they name, not after it.
        raise ValueError("names no pattern: give file name patterns, tiers split by ';', such as 'Packages*;Release'")
    return tiers_given


def parse_trace_path(text: str) -> str:
    path = str(text).strip().strip("/")
    if not path or any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"trace path {path!r} must be a relative path such as {DEFAULT_TRACE_PATH}")
    return path


def parse_upstream_path(text: str) -> str:
    """A file's path inside the upstream module ('' for none), such as project/trace/master."""
    path = str(text).strip().strip("/")
    if path and (any(part in ("", ".", "..") for part in path.split("/")) or any(ord(c) < 32 for c in path)):
        raise ValueError(f"{path!r} is not a relative path inside the upstream module, such as project/trace/master")
    return path


def parse_port(text: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError("expected a TCP port from 0 to 65535 (0 picks a free one)") from None
    if not 0 <= value <= 65535:
        raise ValueError("expected a TCP port from 0 to 65535 (0 picks a free one)")
    return value


def parse_port_range(text: str) -> tuple[int, int] | None:
    """'60000-60099' → (60000, 60099); '' → None (any free port)."""
    if not str(text).strip():
        return None
    first, sep, last = str(text).partition("-")
    if not sep:
        raise ValueError("expected FIRST-LAST, such as 60000-60099")
    low, high = parse_port(first.strip()), parse_port(last.strip())
    if not 0 < low <= high:
        raise ValueError("expected FIRST-LAST with 0 < FIRST <= LAST")
    return low, high


def parse_ipv4(text: str) -> str:
    """An IPv4 address, or '' for none: a PASV reply has room for nothing else."""
    value = str(text).strip()
    if value:
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError("expected an IPv4 address such as 192.0.2.10 (PASV replies carry IPv4 only)") from None
    return value


def parse_endpoint_url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        url = str(text).strip()
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


def parse_s3_endpoint(text: str) -> str:
    """An S3-compatible endpoint such as http://127.0.0.1:5000 (no trailing slash, as boto3 wants it)."""
    return parse_endpoint_url(("http", "https"))(text).rstrip("/")


def parse_queue_url(text: str) -> str:
    """An SQS queue's URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME), or '' for none."""
    url = str(text).strip().rstrip("/")
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(parts.path.strip("/").split("/")) != 2:
        raise ValueError("expected an SQS queue URL such as https://sqs.us-east-1.amazonaws.com/123456789012/NAME")
    return url


def optional_count(low: int = 0, high: int = 1_000_000_000) -> Callable[[str], int | None]:
    """A whole number, or '' / 'none' for no limit."""

    def parse(text: str) -> int | None:
        return None if str(text).strip().lower() in ("", "none") else count(low, high)(text)

    return parse


def parse_region(text: str) -> str:
    region = str(text).strip()
    if not re.fullmatch(r"[a-z]{2,}(-[a-z0-9]+)*-\d+", region):
        raise ValueError("not an AWS region name such as us-east-1 or eu-central-2")
    return region


def parse_command(text: str) -> str:
    """A program and its fixed options; the program must be installed (checked before any lease)."""
    command = str(text).strip()
    if not command:
        raise ValueError("the command is empty")
    program = shlex.split(command)[0]
    if shutil.which(program) is None:
        raise ValueError(f"the program {program!r} is not installed or not on PATH: install it or name another")
    return command


def parse_directory(text: str) -> str:
    """A directory that exists and that we can write to ('' for the system's temporary directory)."""
    path = str(text).strip()
    if path and os.path.exists(path) and not os.path.isdir(path):
        raise ValueError("it is a file, not a directory: point at a directory")
    if path and not os.path.isdir(path):
        raise ValueError("no such directory: create it or point at another")
    if path and not os.access(path, os.W_OK | os.X_OK):
        raise ValueError("the directory is not writable by this user")
    return path


_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_MODULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def parse_module(text: str) -> str:
    """An rsync module name: the first segment of an rsync:// path, so never a '/' (nor ']' or spaces,
    which rsyncd.conf's section headers cannot carry)."""
    name = str(text).strip()
    if not _MODULE.fullmatch(name):
        raise ValueError(
            "an rsync module name is 1-64 letters, digits, '.', '_' and '-', starting with one of the first two"
        )
    return name


def module_of_path(path: str) -> str:
    """The rsync module serving a host's mirror at URL path ``path``: rsync takes a module name up to
    the first '/', so a nested path's segments are joined with '-' (linux/debian → linux-debian)."""
    return path.replace("/", "-")


_SEGMENT = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")


def parse_mirror_name(text: str) -> str:
    name = str(text).strip()
    if name and not _NAME.fullmatch(name):
        raise ValueError(
            "a mirror's name is 1-63 lowercase letters, digits and hyphens, starting with one of the first two"
        )
    return name


def push_name(mirror_name: str) -> str:
    """The NAME a host of one takes pushes under (POST /push/NAME): its mirror name in lowercase, each run
    of other characters one hyphen ('OpenVZ Download' → 'openvz-download'), so that it is a mirror name."""
    slug = re.sub(r"[^a-z0-9]+", "-", mirror_name.lower()).strip("-")[:63].rstrip("-")
    return slug or "mirror"


def parse_mirror_path(text: str) -> str:
    """The URL path a mirror is served under: '' (the root, a host of one) or segments such as
    'openvz' or 'linux/debian', each a safe name (no '.', '..', spaces or upper case)."""
    path = str(text).strip().strip("/")
    if path and not all(_SEGMENT.fullmatch(part) for part in path.split("/")):
        raise ValueError(
            "a mirror's path is one or more segments of lowercase letters, digits, '.', '_' and '-', each starting "
            "with a letter or digit, such as openvz or linux/debian"
        )
    return path


def parse_filters(text: str | list[Any]) -> tuple[str, ...]:
    """rsync filter patterns ('*.tmp', 'isos/', '/private/**'), as a TOML list or comma-separated."""
    items = text if isinstance(text, list) else [] if not str(text).strip() else str(text).split(",")
    patterns = tuple(str(item).strip() for item in items)
    for pattern in patterns:
        if not pattern or any(ord(c) < 32 for c in pattern):
            raise ValueError(f"{pattern!r} is not an rsync pattern")
    return patterns


def parse_bwlimit(text: str) -> int:
    """A bandwidth limit such as 10M (bytes per second; 0 for none), as rsync's --bwlimit takes it in KiB."""
    value = size(0, 100 * 1024**3)(text)
    return -(-value // 1024)


SECRET_SCHEMES = ("file:", "env:", "secretsmanager:")


def parse_secret_ref(text: str) -> str:
    """Where a secret is kept, never the secret: file:PATH, env:VARIABLE or secretsmanager:ARN-OR-NAME."""
    ref = str(text).strip()
    if ref and not (ref.startswith(SECRET_SCHEMES) and ref.split(":", 1)[1]):
        raise ValueError(
            "is a secret given in clear, or not a reference: give file:PATH, env:VARIABLE or "
            "secretsmanager:ARN-OR-NAME, never the secret itself"
        )
    return ref


def parse_aws_ids(text: str | list[Any]) -> tuple[str, ...]:
    """'subnet-0a1b,subnet-2c3d' (or a TOML list) → resource ids."""
    items = text if isinstance(text, list) else str(text).split(",")
    ids = tuple(str(item).strip() for item in items if str(item).strip())
    for value in ids:
        if not re.fullmatch(r"[A-Za-z0-9-]{1,255}", value):
            raise ValueError(f"{value!r} is not a resource id such as subnet-0a1b2c3d or sg-0a1b2c3d")
    return ids


def parse_distribution_id(text: str) -> str:
    value = str(text).strip()
    if value and not re.fullmatch(r"[A-Z0-9]{1,128}", value):
        raise ValueError("not a CloudFront distribution id (uppercase letters and digits, such as E2QWRUHAPOMQZL)")
    return value


def parse_topic_arn(text: str) -> str:
    arn = str(text).strip()
    if arn and not arn.startswith("arn:"):
        raise ValueError("not an ARN (arn:aws:sns:REGION:ACCOUNT:NAME)")
    return arn


# -- the declarations --------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One setting. ``default_text`` is how --help shows the default when ``str(default)`` would not
    say it well; ``command_defaults`` overrides the default for some commands (serve-ftp's port), and
    ``command_default_text`` says one of those in --help when it is worked out later (None);
    ``env_fallbacks`` are standard variables read after ours (AWS_REGION); ``switch`` makes the flag
    take no value (``--dry-run``)."""

    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    commands: frozenset[str]
    group: str
    default_text: str | None = None
    command_defaults: Mapping[str, Any] = field(default_factory=dict)
    command_default_text: Mapping[str, str] = field(default_factory=dict)
    env_fallbacks: tuple[str, ...] = ()
    switch: bool = False
    metavar: str | None = None
    # May be given per mirror in a host's config file ([mirrors.NAME]), or for all of them in [host].
    per_mirror: bool = False
    file_key: str | None = None  # the config file's name for it, when not the setting's own

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def default_for(self, command: str) -> Any:
        return self.command_defaults.get(command, self.default)

    def help_for(self, command: str) -> str:
        if self.switch:
            shown = "off"
        elif command in self.command_default_text:
            shown = self.command_default_text[command]
        elif command in self.command_defaults:
            shown = str(self.command_defaults[command] if self.command_defaults[command] is not None else "none")
        else:
            shown = self.default_text if self.default_text is not None else str(self.default)
        envs = " or ".join((self.env, *self.env_fallbacks))
        return f"{self.help} (default: {shown}) [{envs}]"


LOCATION = "where the mirror lives"
OUTPUT = "output"
SAFETY = "safety"
TUNING = "tuning"
LISTENING = "listening"
FTP = "FTP"
RSYNC = "rsync"
ENDPOINTS = "endpoints to probe"
RULES = "health rules and alerts"
PROBING = "probing"
ANNOUNCING = "the announcement"
FRESHNESS = "freshness and traces"
PUSHING = "pushes"

SETTINGS: tuple[Setting, ...] = (
    # -- where the mirror lives (every command)
    Setting("bucket", parse_bucket, "", "S3 bucket holding the mirror", ALL, LOCATION, default_text="none"),
    Setting(
        "prefix",
        plain,
        "",
        "key prefix inside the bucket; the served tree is PREFIX/pub/, private state PREFIX/state/",
        ALL,
        LOCATION,
        default_text="none",
    ),
    Setting(
        "endpoint_url",
        parse_s3_endpoint,
        "",
        "S3-compatible endpoint, e.g. a local moto server",
        ALL,
        LOCATION,
        default_text="AWS",
        env_fallbacks=("AWS_ENDPOINT_URL",),
    ),
    Setting(
        "region",
        parse_region,
        "us-east-1",
        "AWS region",
        ALL,
        LOCATION,
        env_fallbacks=("AWS_REGION", "AWS_DEFAULT_REGION"),
    ),
    Setting(
        "s3_max_attempts",
        count(1, 100),
        10,
        "attempts per S3 request, with adaptive backoff on throttling and 5xx",
        ALL,
        LOCATION,
    ),
    Setting(
        "config",
        plain,
        "",
        "TOML file with any of these settings (flags and environment win)",
        ALL,
        LOCATION,
        default_text="none",
        metavar="FILE",
    ),
    Setting(
        "host_name",
        plain,
        "",
        "the host's name (mirrors.example.org), shown in pages, traces and alerts",
        ALL,
        LOCATION,
        default_text="the bucket",
        file_key="name",
    ),
    Setting(
        "mirror",
        parse_mirror_name,
        "",
        "the mirror to act on: one of the config file's [mirrors.NAME] tables (push: the NAME of /push/NAME)",
        PER_MIRROR | {PUSH},
        LOCATION,
        default_text="a host of one: no config file tables",
        metavar="NAME",
    ),
    Setting(
        "path",
        parse_mirror_path,
        "",
        "the URL path the mirror is served under (a mirror of a host: its name by default)",
        EACH_MIRROR,
        LOCATION,
        default_text="the root",
        per_mirror=True,
    ),
    Setting(
        "mirror_name",
        plain,
        "",
        "name shown in the trace file, pages, banners, alerts and metrics",
        ALL,
        LOCATION,
        default_text="the bucket",
        per_mirror=True,
    ),
    # -- output (every command)
    Setting(
        "log_format",
        choice("auto", "text", "json"),
        "auto",
        "log lines as text for people or JSON for machines; auto: text on a terminal, JSON otherwise",
        ALL,
        OUTPUT,
    ),
    Setting(
        "log_level",
        choice("DEBUG", "INFO", "WARNING", "ERROR"),
        "INFO",
        "the least important log lines shown",
        ALL,
        OUTPUT,
    ),
    # -- sync
    Setting(
        "upstream",
        parse_upstream,
        "",
        "rsync://HOST[:PORT]/MODULE/ to mirror",
        frozenset({SYNC, ANNOUNCE, VERIFY, MIRRORS}),
        LOCATION,
        default_text="none",
        per_mirror=True,
    ),
    Setting(
        "all",
        parse_bool,
        False,
        "sync every enabled mirror of the config file, one after another (each with its own lease; one failing "
        "never stops the others; the exit code is the most serious of theirs)",
        frozenset({SYNC}),
        LOCATION,
        switch=True,
    ),
    Setting(
        "exclude",
        parse_filters,
        (),
        "rsync patterns of upstream paths not to mirror (a TOML list, or comma-separated)",
        frozenset({SYNC}),
        TUNING,
        default_text="none",
        per_mirror=True,
    ),
    Setting(
        "include",
        parse_filters,
        (),
        "rsync patterns to mirror even where an exclude pattern matches (checked first)",
        frozenset({SYNC}),
        TUNING,
        default_text="none",
        per_mirror=True,
    ),
    Setting(
        "bwlimit",
        parse_bwlimit,
        0,
        "rsync's bandwidth limit, bytes per second, such as 10M (0: none)",
        frozenset({SYNC}),
        TUNING,
        default_text="none",
        per_mirror=True,
    ),
    Setting(
        "rsync_user",
        plain,
        "",
        "user name for an upstream module that asks for one",
        frozenset({SYNC}),
        TUNING,
        default_text="none",
        per_mirror=True,
    ),
    Setting(
        "rsync_password",
        parse_secret_ref,
        "",
        "where the rsync password is kept: file:PATH, env:VARIABLE or secretsmanager:ARN-OR-NAME (never the "
        "password itself)",
        frozenset({SYNC}),
        TUNING,
        default_text="none",
        per_mirror=True,
        metavar="REF",
    ),
    Setting(
        "minute",
        count(0, 59),
        7,
        "minute past the hour the mirror's schedule starts its sync",
        frozenset({VERIFY, MIRRORS}),
        RULES,
        per_mirror=True,
    ),
    Setting(
        "enabled",
        parse_bool,
        True,
        "whether the mirror is synced at all (false: listed as disabled)",
        EACH_MIRROR,
        LOCATION,
        default_text="yes",
        per_mirror=True,
    ),
    Setting(
        "paused",
        parse_bool,
        False,
        "a paused mirror keeps what it serves but is not synced by its schedule or --all",
        EACH_MIRROR,
        LOCATION,
        default_text="no",
        per_mirror=True,
    ),
    Setting(
        "dry_run",
        parse_bool,
        False,
        "print the plan and change nothing (exit 4 if a real run would be refused)",
        frozenset({SYNC}),
        SAFETY,
        switch=True,
    ),
    Setting(
        "max_delete_percent",
        percent,
        10.0,
        "hold the deletions of a plan that deletes more than this share of the files or of the bytes (above "
        "--min-delete-guard files); additions and changes are published regardless",
        frozenset({SYNC}),
        SAFETY,
        default_text="10",
        per_mirror=True,
    ),
    Setting(
        "max_delete",
        optional_count(0),
        None,
        "hold the deletions of a plan that deletes more than this many files, whatever their share",
        frozenset({SYNC}),
        SAFETY,
        default_text="no limit",
        per_mirror=True,
    ),
    Setting(
        "min_delete_guard",
        count(0, 1_000_000_000),
        100,
        "a plan deleting this many files or fewer is never held for its share (the routine churn of a small "
        "repository)",
        frozenset({SYNC}),
        SAFETY,
        per_mirror=True,
    ),
    Setting(
        "quarantine_after",
        count(1, 1000),
        3,
        "runs in a row a path may fail the same way before it is quarantined (retried daily, alerted once)",
        frozenset({SYNC}),
        SAFETY,
        per_mirror=True,
    ),
    Setting(
        "force_delete",
        parse_bool,
        False,
        "delete even what the deletion guard would hold (upstream really shrank)",
        frozenset({SYNC}),
        SAFETY,
        switch=True,
    ),
    Setting(
        "lock_ttl",
        duration(0.0, 86400.0),
        # S3 stamps times in whole seconds and expiry keeps a second of grace: a crashed sync blocks
        # the next for up to this plus two seconds, under two minutes.
        115.0,
        "seconds a sync lease lasts without renewal (renewed every third of it): how long a crashed sync "
        "blocks the next (plus up to 2 s: S3's clock has whole seconds)",
        frozenset({SYNC}),
        SAFETY,
        default_text="115",
    ),
    Setting(
        "staging_dir",
        parse_directory,
        "",
        "where fetched files wait for upload",
        frozenset({SYNC}),
        TUNING,
        default_text="system temp dir",
    ),
    Setting(
        "staging_bytes",
        size(1024),
        8 * 1024**3,
        "disk budget for staged files, e.g. 8G",
        frozenset({SYNC}),
        TUNING,
        default_text="8G",
    ),
    Setting("upload_concurrency", count(1, 256), 16, "parallel uploads", frozenset({SYNC}), TUNING),
    Setting(
        "multipart_threshold",
        size(5 * 1024**2, 5 * 1024**3),
        64 * 1024**2,
        "files above this size upload in parts",
        frozenset({SYNC}),
        TUNING,
        default_text="64M",
    ),
    Setting(
        "late_patterns",
        parse_late_patterns,
        DEFAULT_LATE_PATTERNS,
        "index files published after data, as tiers: 'Packages*,Sources*;Release,InRelease,repomd.xml'",
        frozenset({SYNC, VERIFY, SERVE_RSYNC}),
        TUNING,
        default_text="apt, yum and checksum files",
        per_mirror=True,
    ),
    Setting(
        "trace_path",
        parse_trace_path,
        DEFAULT_TRACE_PATH,
        "trace file path inside the mirror",
        frozenset({SYNC, VERIFY, MIRRORS, SERVE_RSYNC}),
        TUNING,
        per_mirror=True,
    ),
    Setting(
        "ftpsync_trace",
        parse_upstream_path,
        "",
        "where the sync writes its ftpsync-compatible trace (what Debian's mirror checkers read), inside the "
        "mirror; never over a file upstream publishes",
        frozenset({SYNC, VERIFY}),
        FRESHNESS,
        default_text="project/trace/<host name>",
        metavar="PATH",
        per_mirror=True,
    ),
    Setting(
        "timestamp_path",
        parse_trace_path,
        DEFAULT_TIMESTAMP_PATH,
        "where the sync writes the epoch seconds of its last sync (what mirmon probes), inside the mirror",
        frozenset({SYNC, VERIFY}),
        FRESHNESS,
        metavar="PATH",
        per_mirror=True,
    ),
    Setting(
        "upstream_trace",
        parse_upstream_path,
        "",
        "upstream's trace file, a path inside the module (project/trace/master, TIME, ...; a leading / is the "
        "module's root): fetched first, and when it is byte-identical to the last successful run's, the run ends "
        "at once as upstream-unchanged",
        frozenset({SYNC}),
        FRESHNESS,
        default_text="none: every run lists upstream",
        metavar="PATH",
        per_mirror=True,
    ),
    Setting(
        "full_listing_every",
        duration(60.0, 30 * 86400.0),
        86400.0,
        "with --upstream-trace: list upstream in full at least this often, even when its trace is unchanged",
        frozenset({SYNC}),
        FRESHNESS,
        default_text="24h",
        per_mirror=True,
    ),
    Setting(
        "busy_wait",
        duration(0.0, 86400.0, zero=True),
        600.0,
        "how long to wait for an upstream caught mid-update (Archive-Update-in-Progress-*, --busy-marker, or "
        "its trace changing during the run) before ending with exit 6; 0: end at once",
        frozenset({SYNC}),
        FRESHNESS,
        default_text="600",
        per_mirror=True,
    ),
    Setting(
        "busy_marker",
        parse_upstream_path,
        "",
        "a path whose presence upstream means an update is in progress (besides ftpsync's "
        "Archive-Update-in-Progress-* at the root)",
        frozenset({SYNC}),
        FRESHNESS,
        default_text="none",
        metavar="PATH",
        per_mirror=True,
    ),
    Setting(
        "trigger",
        choice("manual", "cron", "push"),
        "manual",
        "what started this run, written in the trace (the stack's schedules say cron, pushes push)",
        frozenset({SYNC}),
        FRESHNESS,
    ),
    Setting(
        "rsync_command",
        parse_command,
        "rsync",
        "rsync program and fixed options",
        frozenset({SYNC, SERVE_RSYNC}),
        TUNING,
        metavar="CMD",
    ),
    Setting(
        "cloudfront_distribution_id",
        parse_distribution_id,
        "",
        "CloudFront distribution serving the mirror: what a run overwrites or deletes is invalidated there in "
        "the same run; without it nothing is invalidated",
        frozenset({SYNC}),
        LOCATION,
        default_text="none",
    ),
    Setting(
        "invalidation_wait",
        duration(0.0, 3600.0, zero=True),
        300.0,
        "seconds a run may spend waiting on CloudFront, in all: for its invalidations to complete, and for room "
        "while too many are in progress; 0 sends them and waits for nothing",
        frozenset({SYNC}),
        TUNING,
        default_text="300",
    ),
    Setting(
        "rsync_timeout",
        count(1, 86400),
        300,
        "seconds the upstream may stay silent (no new listed entry, no fetch I/O) before rsync is stopped and "
        "the run fails",
        frozenset({SYNC}),
        TUNING,
        per_mirror=True,
    ),
    # -- serve-http and serve-ftp
    Setting("host", plain, "127.0.0.1", "address to listen on", LISTENERS | {SERVE_PUSH}, LISTENING),
    Setting(
        "port",
        parse_port,
        0,
        "port to listen on; 0 picks a free one",
        LISTENERS | {SERVE_PUSH},
        LISTENING,
        command_defaults={SERVE_HTTP: 8080, SERVE_FTP: 2121, SERVE_RSYNC: 873, SERVE_PUSH: 8090},
    ),
    Setting("max_connections", count(1, 100_000), 256, "connections served at once", LISTENERS, LISTENING),
    Setting(
        "idle_timeout",
        duration(0.0, 86400.0),
        300.0,
        "seconds an idle connection is kept",
        LISTENERS,
        LISTENING,
        default_text="300",
    ),
    Setting(
        "header_timeout",
        duration(0.0, 3600.0),
        20.0,
        "seconds a client has to send a request's line and headers, counted from connecting (or, on a "
        "kept-alive connection, from the request's first byte); slower ones are disconnected",
        frozenset({SERVE_HTTP}),
        LISTENING,
        default_text="20",
    ),
    Setting(
        "cache_ttl",
        duration(zero=True, high=86400.0),
        10.0,
        "seconds an object read from S3 may be reused, at most (objects' own Cache-Control can only shorten "
        "it; the trace file is never reused); 0 turns the cache off",
        SERVE,
        LISTENING,
        default_text="10",
    ),
    Setting(
        "invalidation_poll",
        duration(zero=True, high=3600.0),
        2.0,
        "seconds between looks at what the last sync invalidated (one conditional GET, only while requests "
        "arrive), whose paths then leave the cache; 0 never looks, so objects live the whole --cache-ttl",
        frozenset({SERVE_HTTP}),
        LISTENING,
        default_text="2",
    ),
    Setting(
        "max_connections_per_ip",
        count(1, 100_000),
        MAX_CONNECTIONS_PER_IP,
        "connections (FTP: sessions) one client address may hold; serve-http counts an IPv6 client's whole /64; "
        "serve-ftp's must be fewer than the --passive-ports, so that one address never holds them all",
        SERVE,
        LISTENING,
        command_defaults={SERVE_FTP: None},
        command_default_text={SERVE_FTP: f"{MAX_CONNECTIONS_PER_IP}, or one fewer than the --passive-ports"},
    ),
    Setting(
        "passive_ports",
        parse_port_range,
        None,
        "passive data port range FIRST-LAST, e.g. 60000-60099: each is held from a PASV or EPSV until the client "
        "connects, and a PASV or EPSV finding them all held is refused with 425",
        frozenset({SERVE_FTP}),
        FTP,
        default_text="any free port, never refused",
    ),
    Setting(
        "masquerade_address",
        parse_ipv4,
        "",
        "IPv4 address announced in PASV replies (the load balancer's public address); IPv6 clients use EPSV",
        frozenset({SERVE_FTP}),
        FTP,
        default_text="the listening address",
    ),
    Setting(
        "one_cpu",
        parse_bool,
        True,
        "keep the server's session threads on one CPU (faster under the GIL)",
        frozenset({SERVE_FTP}),
        FTP,
        default_text="yes",
    ),
    # -- pushes: serve-push and the push function take them; a sync of a mirror that takes them looks for
    # those that arrived while it ran
    Setting(
        "push_secret",
        parse_secret_ref,
        "",
        "where the mirror's push secret is kept: file:PATH, env:VARIABLE or secretsmanager:ARN-OR-NAME. A mirror "
        "with one takes signed pushes (POST /push/NAME), and its sync runs once more when pushes arrived while it ran",
        frozenset({SYNC, SERVE_PUSH}),
        PUSHING,
        default_text="none: no pushes",
        per_mirror=True,
        metavar="REF",
    ),
    Setting(
        "push_secret_file",
        plain,
        "",
        "a file holding the mirror's push secret: the same as --push-secret file:FILE",
        frozenset({SYNC, SERVE_PUSH}),
        PUSHING,
        default_text="none",
        per_mirror=True,
        metavar="FILE",
    ),
    Setting(
        "push_rate_limit",
        count(1, 600),
        6,
        "signed pushes a mirror accepts in a minute; more are answered 429 with Retry-After",
        frozenset({SERVE_PUSH}),
        PUSHING,
        per_mirror=True,
    ),
    Setting(
        "sync_task_definition",
        plain,
        "",
        "the sync's ECS task definition: a push starts it with ecs:RunTask (its container's command becomes "
        "'sync --mirror NAME', or 'sync' for a host of one); without it a push starts 'mirrorkeeper sync' on this "
        "machine, with the settings serve-push was given that sync takes",
        frozenset({SERVE_PUSH}),
        PUSHING,
        default_text="none: a local process",
    ),
    Setting(
        "sync_cluster",
        plain,
        "",
        "the ECS cluster of the sync task",
        frozenset({SERVE_PUSH}),
        PUSHING,
        default_text="none",
    ),
    Setting(
        "sync_subnets",
        parse_aws_ids,
        (),
        "the sync task's subnets, comma-separated (it gets a public address, as the schedule gives it)",
        frozenset({SERVE_PUSH}),
        PUSHING,
        default_text="none",
    ),
    Setting(
        "sync_security_groups",
        parse_aws_ids,
        (),
        "the sync task's security groups, comma-separated",
        frozenset({SERVE_PUSH}),
        PUSHING,
        default_text="none",
    ),
    Setting(
        "sync_container",
        plain,
        "sync",
        "the container of the sync task definition whose command a push sets",
        frozenset({SERVE_PUSH}),
        PUSHING,
    ),
    Setting(
        "sync_log",
        plain,
        "",
        "file the local syncs that pushes start append their output to",
        frozenset({SERVE_PUSH}),
        PUSHING,
        default_text="serve-push's stderr",
        metavar="FILE",
    ),
    Setting(
        "url",
        parse_endpoint_url(("http", "https")),
        "",
        "the push endpoint: the stack's PushUrl output, or serve-push's http://HOST:PORT/",
        frozenset({PUSH}),
        PUSHING,
        default_text="none",
    ),
    Setting(
        "secret_file",
        plain,
        "",
        "a file holding the mirror's push secret",
        frozenset({PUSH}),
        PUSHING,
        default_text="none",
        metavar="FILE",
    ),
    Setting(
        "timeout",
        duration(high=600.0),
        30.0,
        "seconds to wait for the endpoint's answer",
        frozenset({PUSH}),
        PUSHING,
        default_text="30",
    ),
    # -- serve-rsync
    Setting(
        "replica_dir",
        parse_directory,
        "",
        "directory holding the local replica the rsync daemon serves (one snapshot per module, plus the "
        "previous one while clients may still read it)",
        frozenset({SERVE_RSYNC}),
        RSYNC,
        default_text="none",
        metavar="DIR",
    ),
    Setting(
        "module",
        parse_module,
        "mirror",
        "the rsync module's name for a single mirror (with a config file's mirrors, each is named after its path)",
        frozenset({SERVE_RSYNC}),
        RSYNC,
        metavar="NAME",
    ),
    Setting(
        "poll_interval",
        duration(high=86400.0),
        30.0,
        "seconds between looks at the manifest's version (one HEAD per mirror); a new one is applied at once",
        frozenset({SERVE_RSYNC}),
        RSYNC,
        default_text="30",
    ),
    Setting(
        "wake_queue_url",
        parse_queue_url,
        "",
        "SQS queue the stack also sends each sync's completion to: a message there makes serve-rsync look at "
        "the manifests at once instead of at the next --poll-interval",
        frozenset({SERVE_RSYNC}),
        RSYNC,
        default_text="none",
        metavar="URL",
    ),
    Setting(
        "health_port",
        optional_count(1, 65535),
        None,
        "port (on --host) of the health check the load balancer asks: 200 once every module's replica is "
        "complete and the daemon runs, 503 before and after; none: no health check",
        frozenset({SERVE_RSYNC}),
        RSYNC,
        default_text="none",
        metavar="PORT",
    ),
    Setting(
        "download_concurrency",
        count(1, 256),
        16,
        "parallel downloads from S3 into the replica",
        frozenset({SERVE_RSYNC}),
        RSYNC,
    ),
    Setting(
        "replica_reserve",
        size(0),
        64 * 1024**2,
        "free space to leave on the replica's disk: a build or update that would use it is refused",
        frozenset({SERVE_RSYNC}),
        RSYNC,
        default_text="64M",
    ),
    # -- verify (and the announcement's URLs)
    Setting(
        "http_url",
        parse_endpoint_url(("http", "https")),
        "",
        "http(s)://HOST[:PORT]/ of the HTTP front end",
        frozenset({VERIFY, ANNOUNCE}),
        ENDPOINTS,
        default_text="none",
    ),
    Setting(
        "ftp_url",
        parse_endpoint_url(("ftp",)),
        "",
        "ftp://HOST[:PORT]/ of the FTP front end",
        frozenset({VERIFY, ANNOUNCE}),
        ENDPOINTS,
        default_text="none",
    ),
    Setting(
        "rsync_url",
        parse_endpoint_url(("rsync",)),
        "",
        "rsync://HOST[:PORT]/MODULE/ if the mirror serves rsync",
        frozenset({VERIFY, ANNOUNCE}),
        ENDPOINTS,
        default_text="none",
    ),
    Setting(
        "sync_interval",
        duration(high=30 * 86400.0),
        3600.0,
        "how often the sync runs, e.g. 1h: stale beyond 2x is degraded, beyond 6x down",
        frozenset({SYNC, VERIFY, ANNOUNCE, MIRRORS}),
        RULES,
        default_text="1h",
        # The announcement states the frequency: it must come from the operator or the stack, never a guess.
        command_defaults={ANNOUNCE: None},
        per_mirror=True,
        file_key="interval",
    ),
    Setting(
        "topic_arn",
        parse_topic_arn,
        "",
        "SNS topic for alerts",
        frozenset({VERIFY}),
        RULES,
        default_text="alerts only logged",
    ),
    Setting(
        "reminder_interval",
        duration(),
        6 * 3600.0,
        "repeat an alert while a level stays bad",
        frozenset({VERIFY}),
        RULES,
        default_text="6h",
    ),
    Setting("metrics_namespace", plain, "Mirrorkeeper", "CloudWatch namespace", frozenset({VERIFY}), RULES),
    Setting(
        "metrics",
        choice("cloudwatch", "emf", "none"),
        "cloudwatch",
        "where metrics go: PutMetricData, EMF lines on stdout (as in Lambda), or nowhere",
        frozenset({VERIFY}),
        RULES,
    ),
    Setting(
        "probe_timeout",
        duration(high=600.0),
        10.0,
        "seconds each probe may take",
        frozenset({VERIFY}),
        PROBING,
        default_text="10",
    ),
    Setting(
        "probe_concurrency",
        count(1, 64),
        8,
        "parallel probes per endpoint (FTP at most 4)",
        frozenset({VERIFY}),
        PROBING,
    ),
    Setting("sample_random", count(0, 10_000), 8, "random files checked per endpoint", frozenset({VERIFY}), PROBING),
    Setting("sample_newest", count(0, 10_000), 4, "newest files checked", frozenset({VERIFY}), PROBING),
    Setting("sample_late", count(0, 10_000), 4, "index/checksum files checked", frozenset({VERIFY}), PROBING),
    Setting(
        "sample_download", count(0, 10_000), 3, "sampled files downloaded and hashed", frozenset({VERIFY}), PROBING
    ),
    Setting(
        "download_max_bytes",
        size(0, 1024**4),
        8 * 1024**2,
        "largest file downloaded for hashing",
        frozenset({VERIFY}),
        PROBING,
        default_text="8M",
    ),
    Setting(
        "cache_grace",
        duration(),
        3600.0,
        "how long a front end may serve a copy older than the last sync (a CDN cache) before it counts as a failure",
        frozenset({VERIFY}),
        PROBING,
        default_text="1h",
    ),
    Setting(
        "event",
        plain,
        "",
        "trigger event JSON file (e.g. events/ecs-task-stopped-failed.json)",
        frozenset({VERIFY}),
        OUTPUT,
        default_text="a manual run",
        metavar="FILE",
    ),
    Setting(
        "json",
        parse_bool,
        False,
        "print the workflow's final state document as JSON",
        frozenset({VERIFY, MIRRORS}),
        OUTPUT,
        switch=True,
    ),
    # -- announce
    Setting(
        "stack_name",
        plain,
        "",
        "read URLs and schedule from this CloudFormation stack's outputs",
        frozenset({ANNOUNCE}),
        ANNOUNCING,
        default_text="none",
    ),
    Setting(
        "location",
        plain,
        "",
        "physical location: country, state/province, city",
        frozenset({SYNC, ANNOUNCE}),
        ANNOUNCING,
        default_text="the stack's MirrorLocation",
    ),
    Setting(
        "contact",
        plain,
        "",
        "admin email, ideally a generic address",
        frozenset({SYNC, ANNOUNCE}),
        ANNOUNCING,
        default_text="the stack's AdminContact",
    ),
    Setting(
        "schedule",
        plain,
        "",
        "the sync schedule's expression, shown beside the update frequency",
        frozenset({ANNOUNCE}),
        ANNOUNCING,
        default_text="the stack's SyncSchedule",
    ),
    Setting(
        "status_url",
        plain,
        "",
        "the status page's URL",
        frozenset({ANNOUNCE}),
        ANNOUNCING,
        default_text="the stack's StatusPageUrl",
    ),
    Setting("format", choice("text", "json"), "text", "output format", frozenset({ANNOUNCE}), OUTPUT),
)


def settings_for(command: str, settings: Iterable[Setting] = SETTINGS) -> dict[str, Setting]:
    """The settings ``command`` takes, by name."""
    found: dict[str, Setting] = {}
    for setting in settings:
        if command in setting.commands:
            if setting.name in found:
                raise AssertionError(f"setting {setting.name!r} is declared twice for {command}")
            found[setting.name] = setting
    return found


def add_flags(parser: argparse.ArgumentParser, command: str, settings: Iterable[Setting] = SETTINGS) -> None:
    """One flag per setting of ``command``, grouped as declared, its help ending in its default and variable.
    Every flag defaults to None ("not given"), so the environment, the file and the default can speak."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for setting in settings_for(command, settings).values():
        group = groups.get(setting.group) or groups.setdefault(setting.group, parser.add_argument_group(setting.group))
        if setting.switch:
            group.add_argument(
                setting.flag, dest=setting.name, action="store_true", default=None, help=setting.help_for(command)
            )
            continue
        options = getattr(setting.parse, "options", None)
        metavar = setting.metavar or ("{" + ",".join(options) + "}" if options else setting.name.upper())
        group.add_argument(setting.flag, dest=setting.name, metavar=metavar, help=setting.help_for(command))


def flags_of(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed command line as the settings mapping :func:`resolve` reads (unset flags are None)."""
    return {k: v for k, v in vars(args).items() if k not in ("command", "handler")}


def resolve(
    command: str,
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    fallback: Mapping[str, Any] | None = None,
    settings: Iterable[Setting] = SETTINGS,
    mirror: str | None = None,
    file: "ConfigFile | None" = None,
) -> dict[str, Any]:
    """Every setting of ``command``: flag, environment, the config file (``mirror``'s table first, then
    the host's), ``fallback``, default; parsed and checked. ``mirror`` defaults to the --mirror setting;
    ``file``, the config file already read (else it is read here)."""
    env = os.environ if environ is None else environ
    declared = settings_for(command, settings)
    file = read_config(command, flags, env, settings) if file is None else file
    if mirror is None and "mirror" in declared:
        mirror = _value(declared["mirror"], command, flags, env, file.host, {}) or None
    # A command without a config file (push) names a mirror that has no table here.
    table = file.mirror_table(mirror) if mirror and "config" in declared else {}
    values: dict[str, Any] = {}
    for name, setting in declared.items():
        values[name] = _value(setting, command, flags, env, file.host, fallback or {}, table, mirror)
    if mirror:
        values["mirror"] = mirror
        if "path" in declared and not values["path"]:
            values["path"] = mirror  # a mirror of a host is served under its name unless its table says
    return values


def read_config(
    command: str, flags: Mapping[str, Any], environ: Mapping[str, str], settings: Iterable[Setting] = SETTINGS
) -> "ConfigFile":
    """The config file named by --config / MIRRORKEEPER_CONFIG for ``command`` (empty when none)."""
    declared = settings_for(command, settings)
    path = _value(declared["config"], command, flags, environ, {}, {}) if "config" in declared else ""
    if not path:
        return ConfigFile("", {}, {})
    # A config file in S3 is read with the endpoint and region of the flags and environment.
    where = {name: _value(declared[name], command, flags, environ, {}, {}) for name in ("endpoint_url", "region")}
    return ConfigFile.read(path, settings, AwsConfig(where["endpoint_url"] or None, where["region"]))


def _value(
    setting: Setting,
    command: str,
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    host: Mapping[str, Any],
    fallback: Mapping[str, Any],
    table: Mapping[str, Any] | None = None,
    mirror: str | None = None,
) -> Any:
    given = flags.get(setting.name)
    if given is not None:
        return _convert(given, setting, setting.flag)
    for variable in (setting.env, *setting.env_fallbacks):
        if variable in env:
            return _convert(env[variable], setting, variable)
    key = setting.file_key or setting.name
    if table and key in table:
        return _convert(table[key], setting, f"[mirrors.{mirror}] {key!r}")
    if key in host:
        return _convert(host[key], setting, f"config file key {key!r}")
    if setting.name in fallback:
        return _convert(fallback[setting.name], setting, f"the stack's output for {setting.name}")
    return setting.default_for(command)


def _convert(raw: Any, setting: Setting, source: str) -> Any:
    if not isinstance(raw, str | list):
        raw = str(raw).lower() if isinstance(raw, bool) else str(raw)
    try:
        return setting.parse(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}={raw!r} is invalid: {exc}") from None


@dataclass(frozen=True)
class ConfigFile:
    """A TOML config file: host-wide settings (at the top, or in a ``[host]`` table) and one
    ``[mirrors.NAME]`` table per mirror of the host. Checked whole when read: a bad key or value in
    any mirror is a ConfigError naming the mirror and the key, before anything runs."""

    path: str
    host: dict[str, Any]
    mirrors: dict[str, dict[str, Any]]

    @property
    def served_paths(self) -> dict[str, str]:
        """Each mirror's URL path, by name (its name unless its table gives a path)."""
        return {name: parse_mirror_path(table.get("path", name)) or name for name, table in self.mirrors.items()}

    def mirror_table(self, name: str) -> dict[str, Any]:
        if name not in self.mirrors:
            known = ", ".join(self.mirrors) or "none"
            where = f"config file {self.path}" if self.path else "no config file (--config)"
            raise ConfigError(f"no mirror {name!r} in {where}; its mirrors: {known}")
        return self.mirrors[name]

    @classmethod
    def read(cls, path: str, settings: Iterable[Setting] = SETTINGS, aws: "AwsConfig | None" = None) -> "ConfigFile":
        loaded = _load_toml(path, aws)
        known = {key: s for s in (*SETTINGS, *settings) for key in {s.name, s.file_key or s.name}}
        # A [host] table holds the host's settings; a plain `host = "::"` is serve's listening address.
        host_table = loaded.pop("host") if isinstance(loaded.get("host"), dict) else {}
        mirror_tables = loaded.pop("mirrors", {})
        if not isinstance(host_table, dict) or not isinstance(mirror_tables, dict):
            raise ConfigError(f"config file {path}: [host] and [mirrors.NAME] must be tables")
        host = _normalised(loaded, known, path, "")
        for key, value in _normalised(host_table, known, path, "[host] ").items():
            if key in host:
                raise ConfigError(f"config file {path}: {key!r} is set both at the top and in [host]; keep one")
            host[key] = value
        mirrors = {name: _mirror_table(path, name, table, known) for name, table in mirror_tables.items()}
        _check_names_and_paths(path, mirrors)
        return cls(path, host, mirrors)


def _load_toml(path: str, aws: "AwsConfig | None" = None) -> dict[str, Any]:
    import tomllib  # here, not at the top: most runs (the container's) are configured by environment alone

    try:
        if path.startswith("s3://"):
            return tomllib.loads(_read_s3_text(path, aws or AwsConfig(None, "us-east-1")))
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; fix --config / MIRRORKEEPER_CONFIG") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory; fix --config / MIRRORKEEPER_CONFIG") from None
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable; fix its permissions or --config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _read_s3_text(url: str, aws: "AwsConfig") -> str:
    """A config file kept in S3 (``s3://BUCKET/KEY``: in AWS, where `make deploy` puts the host's)."""
    from mirrorkeeper.aws import s3_client
    from mirrorkeeper.s3errors import is_missing, s3_errors

    bucket, _, key = url[len("s3://") :].partition("/")
    client = s3_client(aws)
    with s3_errors(f"read the config file {url}"):
        try:
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            if is_missing(exc):
                raise FileNotFoundError(url) from None
            raise
    return bytes(body).decode("utf-8")


def _normalised(table: dict[str, Any], known: dict[str, Setting], path: str, where: str) -> dict[str, Any]:
    """``table`` with its keys spelt as the settings' file keys (``max_delete`` or ``max-delete``).
    ``name`` is the host's name in [host] alone."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        setting = known.get(key.replace("-", "_"))
        if setting is None or (key == "name" and not where):
            raise ConfigError(f"config file {path}: {where}unknown key {key!r}; see 'mirrorkeeper COMMAND --help'")
        _convert(value, setting, f"config file {path} {where}key {key!r}")
        out[setting.file_key or setting.name] = value
    return out


def _mirror_table(path: str, name: str, table: Any, known: dict[str, Setting]) -> dict[str, Any]:
    where = f"[mirrors.{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: {where} must be a table")
    try:
        parse_mirror_name(name)
    except ValueError as exc:
        raise ConfigError(f"config file {path}: {where}: {exc}") from None
    mirror: dict[str, Any] = {}
    for key, value in table.items():
        setting = known.get(key.replace("-", "_"))
        if setting is None or not setting.per_mirror:
            hint = " (a host-wide setting: put it in [host])" if setting is not None else ""
            raise ConfigError(f"config file {path}: {where} unknown key {key!r}{hint}")
        mirror[setting.file_key or setting.name] = value
        _convert(value, setting, f"config file {path} {where} key {key!r}")
    if not mirror.get("upstream"):
        raise ConfigError(f'config file {path}: {where} has no upstream: add upstream = "rsync://HOST/MODULE/"')
    return mirror


def _check_names_and_paths(path: str, mirrors: dict[str, dict[str, Any]]) -> None:
    """Two mirrors may not share a path or nest one in the other; nor may two names make the same
    resource name in the stack (which drops the hyphens)."""
    served: dict[str, str] = {}
    squashed: dict[str, str] = {}
    for name, mine in ConfigFile(path, {}, mirrors).served_paths.items():
        for other_path, other in served.items():
            if mine == other_path or mine.startswith(other_path + "/") or other_path.startswith(mine + "/"):
                raise ConfigError(
                    f"config file {path}: [mirrors.{name}] path {mine!r} and [mirrors.{other}] path {other_path!r} "
                    "share or nest: give each mirror a path of its own"
                )
        served[mine] = name
        twin = squashed.setdefault(name.replace("-", ""), name)
        if twin != name:
            raise ConfigError(
                f"config file {path}: mirror names {twin!r} and {name!r} differ only by hyphens, which the stack's "
                "resource names drop: rename one"
            )


def require(values: Mapping[str, Any], name: str, example: str, settings: Iterable[Setting] = SETTINGS) -> Any:
    """``values[name]``, or a ConfigError saying how to give it."""
    if values.get(name):
        return values[name]
    setting = next(s for s in settings if s.name == name)
    label = name.replace("_", " ")
    raise ConfigError(f"no {label} given: pass {setting.flag} {example} or set {setting.env}")


def setting(name: str) -> Setting:
    return next(s for s in SETTINGS if s.name == name)


def default(name: str) -> Any:
    """The declared default of setting ``name``: what the config classes' fields default to."""
    return setting(name).default


def pick[T](cls: type[T], values: Mapping[str, Any], **computed: Any) -> T:
    """``cls`` (a dataclass) from the settings named like its fields, and ``computed`` ones."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in values.items() if k in names and k not in computed}, **computed)


# -- what each command gets -------------------------------------------------------------------


@dataclass(frozen=True)
class AwsConfig:
    endpoint_url: str | None
    region: str
    max_attempts: int = default("s3_max_attempts")


def load_aws_config(values: Mapping[str, Any]) -> AwsConfig:
    return AwsConfig(
        endpoint_url=values["endpoint_url"] or None, region=values["region"], max_attempts=values["s3_max_attempts"]
    )


def load_layout(values: Mapping[str, Any]) -> MirrorLayout:
    return MirrorLayout.create(require(values, "bucket", "NAME"), values["prefix"], values.get("path", ""))


@dataclass(frozen=True)
class SyncConfig:
    upstream: str
    layout: MirrorLayout
    aws: AwsConfig
    max_delete_percent: float = default("max_delete_percent")
    max_delete: int | None = default("max_delete")
    min_delete_guard: int = default("min_delete_guard")
    quarantine_after: int = default("quarantine_after")
    force_delete: bool = default("force_delete")
    dry_run: bool = default("dry_run")
    staging_dir: Path | None = None
    staging_bytes: int = default("staging_bytes")
    upload_concurrency: int = default("upload_concurrency")
    multipart_threshold: int = default("multipart_threshold")
    lock_ttl: float = default("lock_ttl")
    late_patterns: LateTiers = default("late_patterns")  # noqa: RUF009 - a tuple of tuples: immutable
    trace_path: str = default("trace_path")
    mirror_name: str = ""
    rsync_command: str = default("rsync_command")
    rsync_timeout: int = default("rsync_timeout")
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    bwlimit: int = 0
    rsync_password: str = ""  # a reference (file:, env:, secretsmanager:), read by credentials.read_secret
    mirror: str = ""  # the mirror of a host ('' for a host of one)
    host_name: str = ""
    location: str = ""
    contact: str = ""
    sync_interval: float = default("sync_interval")
    cloudfront_distribution_id: str = ""
    invalidation_wait: float = default("invalidation_wait")
    ftpsync_trace: str = ""  # resolved: project/trace/<host name> unless set
    timestamp_path: str = default("timestamp_path")
    upstream_trace: str = ""
    full_listing_every: float = default("full_listing_every")
    busy_wait: float = default("busy_wait")
    busy_marker: str = ""
    trigger: str = default("trigger")
    push_secret: str = ""  # a reference: the mirror takes pushes, so a run looks for those that came meanwhile


def load_sync_config(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> SyncConfig:
    return sync_config(resolve(SYNC, flags, environ))


def sync_config(values: Mapping[str, Any]) -> SyncConfig:
    layout = load_layout(values)
    upstream = require(values, "upstream", "rsync://HOST/MODULE/")
    if values["rsync_user"]:
        # rsync://user@host/: the daemon asks for this user's password (RSYNC_PASSWORD).
        scheme, rest = upstream.split("://", 1)
        upstream = f"{scheme}://{values['rsync_user']}@{rest.split('@', 1)[-1]}"
    return pick(
        SyncConfig,
        values,
        upstream=upstream,
        layout=layout,
        aws=load_aws_config(values),
        staging_dir=Path(values["staging_dir"]) if values["staging_dir"] else None,
        mirror_name=values["mirror_name"] or values.get("mirror") or layout.bucket,
        host_name=values["host_name"] or layout.bucket,
        ftpsync_trace=ftpsync_trace_path(values["ftpsync_trace"], values["host_name"] or layout.bucket),
        push_secret=push_secret_ref(values),
    )


def ftpsync_trace_path(setting: str, host_name: str) -> str:
    """Where the mirror's ftpsync trace is: as set, else project/trace/<host name> (ftpsync's place)."""
    return setting or f"project/trace/{host_name}"


def push_secret_ref(values: Mapping[str, Any]) -> str:
    """The mirror's push secret as a reference ('' when it takes no pushes): --push-secret, or
    --push-secret-file as a file: reference."""
    ref, path = values["push_secret"], values["push_secret_file"]
    if ref and path:
        where = f"[mirrors.{values['mirror']}] " if values.get("mirror") else ""
        raise ConfigError(f"{where}push_secret and push_secret_file both name the push secret: keep one")
    return ref or (f"file:{path}" if path else "")


@dataclass(frozen=True)
class ServeConfig:
    """Settings of ``serve-http`` and ``serve-ftp`` (the FTP-only ones keep their defaults for HTTP)."""

    layout: MirrorLayout
    aws: AwsConfig
    host: str = default("host")
    port: int = 0
    max_connections: int = default("max_connections")
    max_connections_per_ip: int = default("max_connections_per_ip")
    idle_timeout: float = default("idle_timeout")
    header_timeout: float = default("header_timeout")
    mirror_name: str = ""
    passive_ports: tuple[int, int] | None = default("passive_ports")
    masquerade_address: str | None = None
    cache_ttl: float = default("cache_ttl")
    one_cpu: bool = default("one_cpu")
    # serve-http's alone: the sync's record is private state, which serve-ftp's task role cannot read.
    invalidation_poll: float = 0.0


def load_serve_config(command: str, flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> ServeConfig:
    return serve_config(resolve(command, flags, environ))


def serve_config(values: Mapping[str, Any]) -> ServeConfig:
    layout = load_layout(values)
    return pick(
        ServeConfig,
        values,
        layout=layout,
        aws=load_aws_config(values),
        mirror_name=values["mirror_name"] or layout.bucket,
        masquerade_address=values.get("masquerade_address") or None,
        max_connections_per_ip=sessions_per_address(values["max_connections_per_ip"], values.get("passive_ports")),
    )


def sessions_per_address(given: int | None, passive_ports: tuple[int, int] | None) -> int:
    """How many connections one client address may hold: below the passive ports' count when there is a
    range, since each session can hold a port from its PASV until it connects, and one address holding
    them all would shut every other client out. Without a range any free port serves: no such bound."""
    if passive_ports is None:
        return MAX_CONNECTIONS_PER_IP if given is None else given
    first, last = passive_ports
    ports = last - first + 1
    if ports < 2:
        raise ConfigError(
            f"--passive-ports {first}-{last} is one port, which one client could hold alone; give a range of at "
            "least 2 ports"
        )
    if given is None:
        return min(MAX_CONNECTIONS_PER_IP, ports - 1)
    if given >= ports:
        raise ConfigError(
            f"--max-connections-per-ip {given} must be below the {ports} ports of --passive-ports {first}-{last}, "
            "or one client address could hold every passive port: lower it or widen the range"
        )
    return given


@dataclass(frozen=True)
class RsyncModule:
    """One module of ``serve-rsync``: a mirror's replica, served read-only under ``name``."""

    name: str
    layout: MirrorLayout
    title: str  # the mirror's name, shown in the module list
    trace_path: str
    late_patterns: LateTiers


@dataclass(frozen=True)
class RsyncServeConfig:
    """Settings of ``serve-rsync``: the replicas it keeps and the daemon that serves them."""

    replica_dir: Path
    modules: tuple[RsyncModule, ...]
    aws: AwsConfig
    host_name: str
    host: str = default("host")
    port: int = 873
    max_connections: int = default("max_connections")
    idle_timeout: float = default("idle_timeout")
    poll_interval: float = default("poll_interval")
    wake_queue_url: str = default("wake_queue_url")
    health_port: int | None = default("health_port")
    download_concurrency: int = default("download_concurrency")
    replica_reserve: int = default("replica_reserve")
    rsync_command: str = default("rsync_command")


def load_rsync_serve_config(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> RsyncServeConfig:
    """One module per mirror of the host's config file, named after its path; else one, ``--module``."""
    env = os.environ if environ is None else environ
    values = resolve(SERVE_RSYNC, flags, env)
    replica_dir = Path(require(values, "replica_dir", "DIR"))
    layout = load_layout(values)
    file = read_config(SERVE_RSYNC, flags, env)
    modules: list[RsyncModule] = []
    for name, path in file.served_paths.items():
        mine = resolve(SERVE_RSYNC, flags, env, mirror=name, file=file)
        module = module_of_path(path)
        if any(m.name == module for m in modules):
            raise ConfigError(f"config file {file.path}: two mirrors' paths make the rsync module name {module!r}")
        title = mine["mirror_name"] or name
        modules.append(
            RsyncModule(module, replace(layout, path=path), title, mine["trace_path"], mine["late_patterns"])
        )
    if not modules:
        title = values["mirror_name"] or layout.bucket
        modules.append(RsyncModule(values["module"], layout, title, values["trace_path"], values["late_patterns"]))
    return pick(
        RsyncServeConfig,
        values,
        replica_dir=replica_dir,
        modules=tuple(modules),
        aws=load_aws_config(values),
        host_name=values["host_name"] or layout.bucket,
    )


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
    sync_interval: float = default("sync_interval")
    topic_arn: str = ""
    metrics_namespace: str = default("metrics_namespace")
    trace_path: str = default("trace_path")
    late_patterns: LateTiers = default("late_patterns")  # noqa: RUF009 - a tuple of tuples: immutable
    probe_timeout: float = default("probe_timeout")
    probe_concurrency: int = default("probe_concurrency")
    sample_random: int = default("sample_random")
    sample_newest: int = default("sample_newest")
    sample_late: int = default("sample_late")
    sample_download: int = default("sample_download")
    download_max_bytes: int = default("download_max_bytes")
    reminder_interval: float = default("reminder_interval")
    cache_grace: float = default("cache_grace")
    host_name: str = ""
    host_url: str = ""  # the host's HTTP root, where its front page is (http_url is this mirror's)
    ftpsync_trace: str = ""
    timestamp_path: str = default("timestamp_path")

    @property
    def own_files(self) -> frozenset[str]:
        """The sync's own files in the served tree (its traces), which no manifest lists."""
        ftpsync = ftpsync_trace_path(self.ftpsync_trace, self.host_name or self.layout.bucket)
        return frozenset({self.trace_path, ftpsync, self.timestamp_path})

    @property
    def endpoints(self) -> dict[str, str]:
        """Configured endpoints by protocol, in probing order."""
        found = {"http": self.http_url, "ftp": self.ftp_url, "rsync": self.rsync_url}
        return {protocol: url for protocol, url in found.items() if url}


def load_verify_config(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> VerifyConfig:
    return verify_config(resolve(VERIFY, flags, environ))


def mirror_url(url: str, layout: MirrorLayout) -> str:
    """The host's URL of a protocol, made a mirror's: its path below the root ('' stays ''); over rsync
    the module serve-rsync names after the path (a nested path's '/' would end the module's name)."""
    if not url or not layout.path:
        return url
    return url + (module_of_path(layout.path) if url.startswith("rsync:") else layout.path) + "/"


def verify_config(values: Mapping[str, Any]) -> VerifyConfig:
    layout = load_layout(values)
    under = partial(mirror_url, layout=layout)
    config = pick(
        VerifyConfig,
        values,
        layout=layout,
        aws=load_aws_config(values),
        mirror_name=values["mirror_name"] or values.get("mirror") or layout.bucket,
        http_url=under(values["http_url"]),
        ftp_url=under(values["ftp_url"]),
        rsync_url=under(values["rsync_url"]),
        host_name=values["host_name"] or layout.bucket,
        host_url=values["http_url"],
    )
    if not config.endpoints:
        raise ConfigError(
            "no endpoint to probe: pass --http-url and/or --ftp-url (or set MIRRORKEEPER_HTTP_URL / "
            "MIRRORKEEPER_FTP_URL)"
        )
    return config


@dataclass(frozen=True)
class PushMirror:
    """One mirror as the push endpoint sees it."""

    name: str  # the NAME of POST /push/NAME
    table: str  # its [mirrors.NAME] table, what 'sync --mirror' names; '' for a host of one
    layout: MirrorLayout
    secret: str  # a reference to the push secret; '' when it takes no pushes
    rate_limit: int = default("push_rate_limit")
    enabled: bool = True
    paused: bool = False

    @property
    def closed(self) -> str:
        """Why it takes no pushes ('' when it takes them)."""
        if not self.secret:
            return "it has no push secret"
        if not self.enabled:
            return "it is disabled"
        return "it is paused" if self.paused else ""


@dataclass(frozen=True)
class PushConfig:
    """Settings of ``serve-push`` and of the push function: the host's mirrors, by push name, and where
    the syncs that pushes start run."""

    aws: AwsConfig
    layout: MirrorLayout  # the host's: where the used signatures are kept
    mirrors: dict[str, PushMirror]
    host: str = default("host")
    port: int = 0
    sync_task_definition: str = ""
    sync_cluster: str = ""
    sync_subnets: tuple[str, ...] = ()
    sync_security_groups: tuple[str, ...] = ()
    sync_container: str = default("sync_container")
    sync_log: str = ""


def load_push_config(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> PushConfig:
    env = os.environ if environ is None else environ
    file = read_config(SERVE_PUSH, flags, env)
    values = resolve(SERVE_PUSH, flags, env, file=file)
    if file.mirrors:
        each = [(name, resolve(SERVE_PUSH, flags, env, mirror=name, file=file)) for name in file.mirrors]
        mirrors = [push_mirror(mine, name, name) for name, mine in each]
    else:
        mirrors = [push_mirror(values, push_name(values["mirror_name"] or require(values, "bucket", "NAME")), "")]
    if values["sync_task_definition"] and not (values["sync_cluster"] and values["sync_subnets"]):
        raise ConfigError(
            "--sync-task-definition needs --sync-cluster and --sync-subnets (MIRRORKEEPER_SYNC_CLUSTER, "
            "MIRRORKEEPER_SYNC_SUBNETS) to start the task"
        )
    return pick(
        PushConfig,
        values,
        aws=load_aws_config(values),
        layout=load_layout(values).host,
        mirrors={mirror.name: mirror for mirror in mirrors},
    )


def push_mirror(values: Mapping[str, Any], name: str, table: str) -> PushMirror:
    return pick(
        PushMirror,
        values,
        name=name,
        table=table,
        layout=load_layout(values),
        secret=push_secret_ref(values),
        rate_limit=values["push_rate_limit"],
    )
