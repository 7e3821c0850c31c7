"""Which files an index file names, read from its content: what the sync checks before it publishes
an index (late tier) while some data of this run failed to arrive.

An index is held back (its published version stays) only when a file it names failed; an index
that names nothing that failed is published with the rest. Formats read:

    Release, InRelease                 apt: "<hash> <size> <path>" under MD5Sum/SHA1/SHA256/SHA512,
                                       relative to the Release file's directory
    Packages*, Sources*                apt: "Filename: pool/..." / "Directory:" + "Files:", relative to
                                       the archive root (the directory holding dists/), or to their
                                       own directory in a flat repository
    repomd.xml                         yum: <location href="repodata/..."/>, relative to the
                                       directory holding repodata/
    *SUMS, CHECKSUM, *.sha256, ...     "<hash>  <name>", "<hash> *<name>", "SHA256 (<name>) = <hash>"

Anything else (or a file that cannot be read) gives None: the caller then holds the index when a
failure lies in its directory or below, which is the cautious reading.
"""

import bz2
import gzip
import lzma
import posixpath
import re
from collections.abc import Callable, Iterable
from io import BufferedIOBase
from pathlib import Path

READ_LIMIT = 256 * 1024 * 1024  # bytes of (uncompressed) index read; a larger one is read in part
_HASH_LINE = re.compile(r"^\s+[0-9a-fA-F]{32,128}\s+\d+\s+(\S.*)$")
_HASH_SECTIONS = ("MD5Sum:", "SHA1:", "SHA256:", "SHA512:")
_HREF = re.compile(r"""<location\s[^>]*href\s*=\s*["']([^"']+)["']""")
_SUM_LINE = re.compile(r"^[0-9a-fA-F]{32,128}\s[ *](.+)$")
_BSD_SUM_LINE = re.compile(r"^[A-Z0-9-]+ \((.+)\) = [0-9a-fA-F]{32,128}$")
Opener = Callable[[Path], BufferedIOBase]
_OPENERS: dict[str, Opener] = {".gz": gzip.GzipFile, ".xz": lzma.LZMAFile, ".bz2": bz2.BZ2File}
_SUM_SUFFIXES = (".sha1", ".sha256", ".sha512", ".md5", ".sha1sum", ".sha256sum", ".sha512sum", ".md5sum")
Place = tuple[str, str]  # (directory the name is relative to, the name)
Reader = Callable[[str, str, str], Iterable[Place]]


def named_files(index_path: str, local: Path) -> set[str] | None:
    """Mirror paths the index at ``index_path`` (its content at ``local``) names, or None when its
    format is not one we read."""
    name = posixpath.basename(index_path)
    directory = posixpath.dirname(index_path)
    base, extension = posixpath.splitext(name)
    reader = _reader(base if extension in _OPENERS else name)
    if reader is None:
        return None
    try:
        text = _read_text(local, _OPENERS.get(extension))
    except (OSError, EOFError, lzma.LZMAError, ValueError):
        return None
    return {path for path in (_join(*place) for place in reader(text, index_path, directory)) if path is not None}


def holding_scope(index_path: str) -> str:
    """The tree an index speaks for: the archive root above dists/, the repository above repodata/,
    else its own directory. Deletions there wait while the index itself is held back."""
    parts = index_path.split("/")[:-1]
    for marker in ("dists", "repodata"):
        if marker in parts:
            return "/".join(parts[: parts.index(marker)])
    return "/".join(parts)


def _reader(name: str) -> Reader | None:
    if name in ("Release", "InRelease"):
        return _release
    if name.startswith(("Packages", "Sources")):
        return _packages
    if name == "repomd.xml":
        return _repomd
    lowered = name.lower()
    if name.endswith("SUMS") or name.endswith("CHECKSUM") or lowered.endswith(_SUM_SUFFIXES):
        return _checksums
    return None


def _read_text(local: Path, opener: Opener | None) -> str:
    with opener(local) if opener is not None else open(local, "rb") as handle:
        return handle.read(READ_LIMIT).decode("utf-8", errors="replace")


def _release(text: str, index_path: str, directory: str) -> Iterable[Place]:
    in_hashes = False
    for line in text.splitlines():
        if not line.startswith((" ", "\t")):
            in_hashes = line.strip() in _HASH_SECTIONS
            continue
        if in_hashes and (match := _HASH_LINE.match(line)):
            yield directory, match.group(1).strip()


def _packages(text: str, index_path: str, directory: str) -> Iterable[Place]:
    root = holding_scope(index_path) if "/dists/" in f"/{index_path}" else directory
    source_dir = ""
    in_files = False
    for line in text.splitlines():
        if line.startswith("Filename:"):
            yield root, line.split(":", 1)[1].strip()
        elif line.startswith("Directory:"):
            source_dir = line.split(":", 1)[1].strip()
        elif not line.startswith((" ", "\t")):
            in_files = line.strip() in ("Files:", "Checksums-Sha256:", "Checksums-Sha1:", "Checksums-Sha512:")
        elif in_files and source_dir:
            fields = line.split()
            if len(fields) == 3:
                yield root, f"{source_dir}/{fields[2]}"


def _repomd(text: str, index_path: str, directory: str) -> Iterable[Place]:
    root = holding_scope(index_path)
    for href in _HREF.findall(text):
        yield root, href


def _checksums(text: str, index_path: str, directory: str) -> Iterable[Place]:
    for line in text.splitlines():
        match = _SUM_LINE.match(line.strip()) or _BSD_SUM_LINE.match(line.strip())
        if match:
            yield directory, match.group(1)


def _join(directory: str, name: str) -> str | None:
    """``name`` (relative, '/'-separated) under ``directory``, normalised; None when it leaves the mirror."""
    if name.startswith("/") or "://" in name:
        return None
    joined = posixpath.normpath(posixpath.join(directory, name)) if directory else posixpath.normpath(name)
    if joined in (".", "..") or joined.startswith("../"):
        return None
    return joined


def names_failed(named: set[str] | None, index_path: str, failed: Iterable[str]) -> str | None:
    """The first failed path that holds the index back: one it names, or (format unknown) one in
    its scope. None when the index may be published."""
    if named is not None:
        return next((path for path in sorted(failed) if path in named), None)
    scope = posixpath.dirname(index_path)
    prefix = scope + "/" if scope else ""
    return next((path for path in sorted(failed) if path.startswith(prefix) and path != index_path), None)
