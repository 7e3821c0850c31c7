"""``mirrorkeeper <command>``: the command line users and the container script against.

Every failure the operator can act on is a typed MirrorkeeperError: it becomes one line on
stderr (what happened, what to do) and the exit code DESIGN.md promises.
"""

import argparse
import logging
import sys
from collections.abc import Sequence

from mirrorkeeper import __version__
from mirrorkeeper.commands import announce, demo, serve_ftp, serve_http, sync, verify
from mirrorkeeper.errors import ExitCode, MirrorkeeperError

COMMANDS = (sync, serve_http, serve_ftp, verify, demo, announce)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mirrorkeeper",
        description="Keep a public download mirror in AWS: rsync upstream into S3, serve it over HTTP and FTP, "
        "verify it and report health to CloudWatch and SNS.",
        epilog="exit codes: 0 ok, 1 failure, 2 usage/config error, 3 lock held, 4 deletion guard refused. "
        "'mirrorkeeper COMMAND --help' explains each command.",
    )
    parser.add_argument("--version", action="version", version=f"mirrorkeeper {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except MirrorkeeperError as exc:
        print(f"mirrorkeeper {args.command}: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print(
            f"mirrorkeeper {args.command}: interrupted; the served mirror is consistent, rerun to finish",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:
        logging.getLogger("mirrorkeeper").exception("unexpected failure")
        print(
            f"mirrorkeeper {args.command}: error: unexpected {type(exc).__name__}: {exc}; this is a bug, please "
            "report it with the log above",
            file=sys.stderr,
        )
        return int(ExitCode.FAILURE)


if __name__ == "__main__":
    sys.exit(main())
