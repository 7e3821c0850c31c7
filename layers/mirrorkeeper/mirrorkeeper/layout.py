"""Where things live in the bucket.

The served tree and the private state are sibling prefixes under one root, so CloudFront's
origin path, the bucket policy and the FTP root can name the served prefix alone and private
state is never reachable by construction (docs/architecture.md, "Bucket layout").

    <root>/pub/...            upstream's tree, our trace file, directory index pages
    <root>/state/...          manifest, last upstream listing, run reports, lock, health
                              (their keys and formats: mirrorkeeper.state)

A host of several mirrors keeps each under its path, on both sides, and its own pages apart:

    <root>/pub/<path>/...     mirror <path>'s tree (its trace, status page: <path>/.mirrorkeeper/)
    <root>/state/<path>/...   its private state
    <root>/pub/               the host's front page (an index of mirrors), pub/.mirrorkeeper/mirrors.json
    <root>/state/.host/       the host's own state (no mirror path starts with '.')

A directory is an object whose key ends in "/" (``pub/dir/``): it marks empty directories and
holds that directory's index page, so ``GET /dir/`` returns the page with no rewrite and no
upstream name (which never ends in "/") can collide with it.
"""

from dataclasses import dataclass

from mirrorkeeper.errors import ConfigError

SERVED_DIR = "pub/"
STATE_DIR = "state/"
# Names under this directory of the served tree are ours (trace, status page): upstream files there
# are not mirrored. What each object is and how it is written: mirrorkeeper.state.
RESERVED_DIR = ".mirrorkeeper/"
DEFAULT_TRACE_PATH = RESERVED_DIR + "trace"
DEFAULT_TIMESTAMP_PATH = RESERVED_DIR + "timestamp"  # the epoch of the last sync, for mirmon


def normalize_prefix(prefix: str) -> str:
    """'', 'a', '/a/b/' → '', 'a/', 'a/b/'. Rejects '..' and empty segments."""
    parts = [p for p in prefix.strip().strip("/").split("/")] if prefix.strip("/ ") else []
    for part in parts:
        if part in ("", ".", ".."):
            raise ConfigError(
                f"prefix {prefix!r} has an empty, '.' or '..' segment; use a plain path such as 'mirrors/openvz'"
            )
    return "".join(p + "/" for p in parts)


HOST_STATE_DIR = ".host/"


@dataclass(frozen=True, slots=True)
class MirrorLayout:
    """One mirror's place in the bucket: ``path`` '' for a host of one (the whole served tree)."""

    bucket: str
    prefix: str = ""
    path: str = ""

    @classmethod
    def create(cls, bucket: str, prefix: str = "", path: str = "") -> "MirrorLayout":
        return cls(bucket=bucket, prefix=normalize_prefix(prefix), path=normalize_prefix(path).rstrip("/"))

    @property
    def _below(self) -> str:
        return self.path + "/" if self.path else ""

    @property
    def served_prefix(self) -> str:
        return self.prefix + SERVED_DIR + self._below

    @property
    def state_prefix(self) -> str:
        return self.prefix + STATE_DIR + self._below

    @property
    def host(self) -> "MirrorLayout":
        """The host's own places: the root of the served tree (its front page) and ``state/.host/``."""
        return MirrorLayout(self.bucket, self.prefix)

    @property
    def host_state_prefix(self) -> str:
        return self.prefix + STATE_DIR + HOST_STATE_DIR

    def served_key(self, path: str) -> str:
        """Key of a mirror file at relative ``path``."""
        return self.served_prefix + path

    def directory_key(self, path: str) -> str:
        """Key of the directory marker (and index page) of relative directory ``path`` ('' = root)."""
        return self.served_prefix + (path + "/" if path else "")
