"""``mirrorkeeper <command>``: the command line users and the container script against.

Every failure the operator can act on is a typed MirrorkeeperError: it becomes one line on
stderr (what happened, what to do) and the exit code docs/architecture.md lists.

Commands beyond the built-in ones (``mirrorkeeper demo``, from the development tools that the
layer and the image do not ship) register through the ``mirrorkeeper.commands`` entry point group.
"""

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Sequence

from mirrorkeeper import __version__
from mirrorkeeper.errors import ExitCode, MirrorkeeperError

# Command name → module with ``register(subparsers)`` and ``run(args) -> int``; one line per command.
# A module is imported only when its command runs (or for the overall help), so that
# ``mirrorkeeper sync`` does not pay for the front ends' and the demo's imports (pyftpdlib, moto).
COMMANDS = {
    "sync": "mirrorkeeper.commands.sync",
    "serve-http": "mirrorkeeper.commands.serve_http",
    "serve-ftp": "mirrorkeeper.commands.serve_ftp",
    "serve-rsync": "mirrorkeeper.commands.serve_rsync",
    "verify": "mirrorkeeper.commands.verify",
    "announce": "mirrorkeeper.commands.announce",
    "mirrors": "mirrorkeeper.commands.mirrors",
    "serve-push": "mirrorkeeper.commands.serve_push",
    "push": "mirrorkeeper.commands.push",
}
PLUGIN_GROUP = "mirrorkeeper.commands"


def available_commands(command: str | None) -> dict[str, str]:
    """The built-in commands, and the installed plugins' when ``command`` is not a built-in one
    (looking them up costs a scan of the installed packages, which ``sync`` should not pay)."""
    if command in COMMANDS:
        return {command: COMMANDS[command]}
    from importlib.metadata import entry_points

    plugins = {ep.name: ep.value for ep in entry_points(group=PLUGIN_GROUP) if ep.name not in COMMANDS}
    return {command: plugins[command]} if command in plugins else {**COMMANDS, **plugins}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for ``command`` alone when it is a known command, else for all of them."""
    parser = argparse.ArgumentParser(
        prog="mirrorkeeper",
        description="Keep a public download mirror in AWS: rsync upstream into S3, serve it over HTTP and FTP, "
        "verify it and report health to CloudWatch and SNS.",
        epilog="exit codes: 0 ok, 1 failure, 2 usage/config error, 3 lock held, 4 deletions held by the guard "
        "(the rest published), 5 partial (some paths skipped), 6 upstream busy, 130 stopped by a signal. "
        "'mirrorkeeper COMMAND --help' explains each command.",
    )
    parser.add_argument("--version", action="version", version=f"mirrorkeeper {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in available_commands(command).values():
        importlib.import_module(module).register(subparsers)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The top-level parser takes no option with a value, so the first other word is the command.
    command = next((word for word in argv if not word.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (ECS stopping a task, a service manager) unwinds like Ctrl-C: the lease is released,
        # the run report written, child servers and daemons stopped.
        signal.signal(signal.SIGTERM, _interrupt)
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
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:
        import logging  # only now: a sync starts rsync before anything that needs logging is imported

        logging.getLogger("mirrorkeeper").exception("unexpected failure")
        print(
            f"mirrorkeeper {args.command}: error: unexpected {type(exc).__name__}: {exc}; this is a bug, please "
            "report it with the log above",
            file=sys.stderr,
        )
        return int(ExitCode.FAILURE)


if __name__ == "__main__":
    sys.exit(main())
