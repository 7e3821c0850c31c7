"""One module per ``mirrorkeeper`` command: each has ``register(subparsers)`` and ``run(args) -> int``."""
