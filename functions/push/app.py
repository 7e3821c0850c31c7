"""The push function behind its function URL: signed pushes start the mirror's sync task (push.lambdas)."""

from mirrorkeeper.push.lambdas import handler

__all__ = ["handler"]
