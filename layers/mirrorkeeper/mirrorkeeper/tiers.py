"""Index files that point at data, published only after the data they name (ftpsync's stage two).

The sync's planner puts each file in a tier by its name; the probes sample the same files, since an
index that names a missing file is what breaks apt and dnf.
"""

from fnmatch import fnmatchcase

LateTiers = tuple[tuple[str, ...], ...]

# Tier one is the per-component indexes, tier two the signed roots that name them.
DEFAULT_LATE_PATTERNS: LateTiers = (
    ("Packages*", "Sources*", "Contents-*", "Translation-*", "Index", "ls-lR*"),
    (
        "Release",
        "Release.gpg",
        "InRelease",
        "repomd.xml",
        "repomd.xml.asc",
        "repomd.xml.key",
        "*SUMS",
        "*SUMS.gpg",
        "*SUMS.asc",
        "*SUMS.sign",
        "CHECKSUM",
        "*-CHECKSUM",
        "*.sha1",
        "*.sha256",
        "*.sha512",
        "*.md5",
        "*.sha1sum",
        "*.sha256sum",
        "*.sha512sum",
        "*.md5sum",
    ),
)


def late_tier(name: str, tiers: LateTiers) -> int | None:
    """Which late tier a file name belongs to (0-based), or None for plain data."""
    for number, patterns in enumerate(tiers):
        if any(fnmatchcase(name, pattern) for pattern in patterns):
            return number
    return None
