"""``mirrorkeeper mirrors``: each mirror of the host, its state as the front page shows it."""

from __future__ import annotations

import argparse
import json
import sys
import time

from mirrorkeeper.config import MIRRORS, add_flags, flags_of, load_aws_config, resolve
from mirrorkeeper.display import human_size, iso, table
from mirrorkeeper.errors import ConfigError

DESCRIPTION = """\
List each mirror of the host's config file (--config mirrors.toml) with its state: the last
sync that published and the last sync whatever its result, size, next scheduled run, and the
health levels the last verification recorded. Read from the bucket, as the host's front page and
/.mirrorkeeper/mirrors.json show them; --json prints those very fields (tunasync's web-status
names: name, is_master, status, last_update, last_update_ts, last_ended, last_ended_ts,
upstream, size, next_schedule_ts, and ours).

A host of one (no [mirrors.NAME] tables) lists its one mirror.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        MIRRORS,
        help="list the host's mirrors: last sync, result, size, next run, health",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flags(parser, MIRRORS)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mirrorkeeper.aws import s3_client
    from mirrorkeeper.host import entry_of, mirror_entries, summarise_all

    flags = flags_of(args)
    values = resolve(MIRRORS, flags)
    entries = [(e, v) for e, v in mirror_entries(MIRRORS, flags) if e.name == values["mirror"] or not values["mirror"]]
    if not entries:
        if not values["upstream"] and not values["bucket"]:
            raise ConfigError("no mirror to list: give the host's --config, or --bucket for a host of one")
        entries = [(entry_of({**values, "mirror": values["mirror_name"] or values["bucket"]}), values)]
    now = time.time()
    summaries = summarise_all(s3_client(load_aws_config(values)), [entry for entry, _ in entries], now)
    if values["json"]:
        json.dump([s.to_json() for s in summaries], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    rows: list[list[object]] = [["mirror", "path", "status", "last success", "last sync", "size", "next run", "health"]]
    for s in summaries:
        rows.append(
            [
                s.name,
                "/" + s.path + "/" if s.path else "/",
                s.status,
                iso(s.last_update) if s.last_update else "never",
                f"{iso(s.last_ended)} {s.result} (exit {s.exit_code})" if s.last_ended else "never",
                human_size(s.size) if s.size is not None else "unknown",
                iso(s.next_schedule) if s.next_schedule else "-",
                s.health.get("overall", "unknown"),
            ]
        )
    print(table(rows))
    return 0
