"""``mirrorkeeper announce``: the announcement the upstream's mirror list asks for.

The OpenVZ guide's last step: tell the upstream where the mirror is, how often it updates, its URLs
and whom to contact. Values come from flags, then MIRRORKEEPER_* variables, then the config file,
then the deployed stack's outputs (``--stack-name``); the mirror's size from the published manifest.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from mirrorkeeper.aws import s3_client
from mirrorkeeper.config import (
    ANNOUNCE,
    add_flags,
    flags_of,
    load_aws_config,
    load_layout,
    mirror_url,
    read_config,
    resolve,
)
from mirrorkeeper.display import human_size, iso
from mirrorkeeper.entries import EntryType
from mirrorkeeper.errors import ConfigError, MirrorkeeperError
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.state import STATUS_HTML_PATH, StateStore

DESCRIPTION = """\
Print the announcement of this mirror for the upstream's mirror list (the OpenVZ guide asks for
the physical location, the update frequency, the URLs and an admin contact; the size helps).

With --stack-name the URLs, schedule, location and contact come from the stack's outputs
(aws cloudformation describe-stacks); any flag or MIRRORKEEPER_* variable overrides them. The size
is read from the published manifest (state/manifest.jsonl.gz), which a failed or refused run
leaves as it was.
"""

# Stack output → setting it provides (template.yaml, Outputs).
STACK_OUTPUTS = {
    "MirrorName": "mirror_name",
    "UpstreamUrl": "upstream",
    "HttpUrl": "http_url",
    "FtpUrl": "ftp_url",
    "BucketName": "bucket",
    "SyncIntervalSeconds": "sync_interval",
    "SyncSchedule": "schedule",
    "StatusPageUrl": "status_url",
    "MirrorLocation": "location",
    "AdminContact": "contact",
}


@dataclass(frozen=True)
class Announcement:
    mirror_name: str
    upstream: str
    location: str
    update_frequency: str
    schedule: str
    http_url: str
    ftp_url: str
    rsync_url: str
    contact: str
    size_bytes: int
    files: int
    last_sync: str
    status_url: str

    def text(self) -> str:
        urls = [("HTTP", self.http_url), ("FTP", self.ftp_url), ("rsync", self.rsync_url)]
        rows = [
            ("Mirror", self.mirror_name + (f" (of {self.upstream})" if self.upstream else "")),
            ("Location", self.location),
            ("Updates", self.update_frequency + (f", schedule {self.schedule}" if self.schedule else "")),
            *[(label, url) for label, url in urls if url],
            ("Size", f"{human_size(self.size_bytes)} in {self.files:,} entries (last sync {self.last_sync})"),
            ("Admin contact", self.contact),
        ]
        if self.status_url:
            rows.append(("Status page", self.status_url))
        width = max(len(label) for label, _ in rows) + 2
        return "\n".join(f"{label + ':':<{width}}{value}" for label, value in rows)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "announce",
        help="print the mirror's announcement (location, update frequency, URLs, contact, size)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flags(parser, ANNOUNCE)
    parser.set_defaults(handler=run)


def stack_outputs(stack_name: str, region: str, endpoint_url: str | None, client: Any = None) -> dict[str, str]:
    """The stack's outputs as settings (STACK_OUTPUTS), empty values left out."""
    cfn = client or boto3.session.Session().client("cloudformation", region_name=region, endpoint_url=endpoint_url)
    try:
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        raise ConfigError(
            f"stack {stack_name!r} could not be read in {region} ({exc.response['Error'].get('Message', exc)}); "
            "check --stack-name and --region"
        ) from None
    except BotoCoreError as exc:
        raise MirrorkeeperError(f"could not reach CloudFormation: {exc}; check credentials and network") from None
    outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in stacks[0].get("Outputs", [])}
    return {STACK_OUTPUTS[key]: value for key, value in outputs.items() if key in STACK_OUTPUTS and value}


def mirror_size(s3: Any, layout: MirrorLayout) -> tuple[int, int, str]:
    """(bytes, entries, when published) of the mirror as clients see it: from the published manifest,
    which a failed, refused or partial run leaves as it was (the last run's report may not say)."""
    state = StateStore(s3, layout)
    meta = state.manifest_meta()
    if meta is None:
        raise MirrorkeeperError(
            f"s3://{layout.bucket}/{state.manifest_key} does not exist: no sync has published yet. Run the first "
            "sync (README, 'Deploy'), then announce"
        )
    if meta.totals is not None:
        entries, size, _ = meta.totals
    else:  # a manifest from before the totals were recorded: count it
        entries = size = 0
        with state.manifest_entries() as published:
            for entry in published:
                entries += 1
                size += entry.size if entry.type is EntryType.FILE else 0
    return size, entries, iso(meta.published)


def describe_interval(seconds: float) -> str:
    if seconds % 3600 == 0:
        hours = int(seconds // 3600)
        return "hourly" if hours == 1 else f"every {hours} hours"
    if seconds % 60 == 0:
        return f"every {int(seconds // 60)} minutes"
    return f"every {seconds:g} seconds"


def build_announcement(flags: dict[str, Any], environ: dict[str, str] | None = None, cfn: Any = None) -> Announcement:
    values = resolve(ANNOUNCE, flags, environ)
    aws = load_aws_config(values)
    if values["stack_name"]:
        # Flags, environment and config file first; the stack's outputs fill what they leave unset.
        stack = stack_outputs(values["stack_name"], aws.region, aws.endpoint_url, cfn)
        values = resolve(ANNOUNCE, flags, environ, fallback=stack)
    mirrors = read_config(ANNOUNCE, flags, os.environ if environ is None else environ).served_paths
    if mirrors and not values["mirror"]:
        raise ConfigError(
            f"this host has {len(mirrors)} mirrors ({', '.join(mirrors)}): each upstream project lists its own "
            "mirror, so name one with --mirror NAME"
        )
    missing = []
    if not values["location"]:
        missing.append("the location (--location, MIRRORKEEPER_LOCATION or the stack's MirrorLocation)")
    if not values["contact"]:
        missing.append("the admin contact (--contact, MIRRORKEEPER_CONTACT or the stack's AdminContact)")
    if not (values["http_url"] or values["ftp_url"] or values["rsync_url"]):
        missing.append("a URL (--http-url / --ftp-url / --rsync-url, or --stack-name)")
    if values["sync_interval"] is None:
        missing.append("the update frequency (--sync-interval or --stack-name)")
    if not values["bucket"]:
        missing.append("the bucket, for the mirror's size (--bucket or --stack-name)")
    if missing:
        raise ConfigError("the announcement needs " + "; ".join(missing))
    layout = load_layout(values)
    size, files, last_sync = mirror_size(s3_client(aws), layout)
    # A mirror of a host is reached under its path on every protocol, its status page too.
    status_url = values["status_url"]
    if layout.path and values["http_url"] and (not status_url or status_url.startswith(values["http_url"])):
        status_url = mirror_url(values["http_url"], layout) + STATUS_HTML_PATH
    return Announcement(
        mirror_name=values["mirror_name"] or layout.bucket,
        upstream=values["upstream"],
        location=values["location"],
        update_frequency=describe_interval(values["sync_interval"]),
        schedule=values["schedule"],
        http_url=mirror_url(values["http_url"], layout),
        ftp_url=mirror_url(values["ftp_url"], layout),
        rsync_url=mirror_url(values["rsync_url"], layout),
        contact=values["contact"],
        size_bytes=size,
        files=files,
        last_sync=last_sync or "unknown",
        status_url=status_url,
    )


def run(args: argparse.Namespace) -> int:
    flags = flags_of(args)
    announcement = build_announcement(flags)
    if resolve(ANNOUNCE, flags)["format"] == "json":
        print(json.dumps(asdict(announcement), indent=2))
    else:
        print(announcement.text())
    return 0
