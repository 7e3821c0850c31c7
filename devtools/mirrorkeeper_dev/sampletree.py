"""Generated upstream trees shared by the tests, the benchmarks and the demo.

Deterministic for a given seed: sizes, nesting, names (including the hostile ones rsync can
carry), mtimes; plus mutations (change, add, delete a share of files) for incremental runs.
"""

import os
import random
from dataclasses import dataclass
from pathlib import Path

# Every kind of name that must round-trip (docs/sync.md). Newline is separate: moto's server cannot
# route such a key (real S3 can), so tests that go through it opt in explicitly.
HOSTILE_NAMES = (
    "with space.txt",
    " leading space",
    "trailing space ",
    "plus+sign.rpm",
    "percent%20encoded",
    "percent%zz",
    "hash#fragment",
    "question?mark",
    "amp&semi;equals=.txt",
    "back\\slash",
    "tab\there",
    "-leading-dash",
    "--double-dash",
    "arrow -> not-a-link",
    "caf\u00e9-nfc",
    "cafe\u0301-nfd",
    "\u65e5\u672c\u8a9e.txt",
    "emoji-\U0001f680",
    "quote'single",
    'quote"double',
    "star*glob[1]",
    "semi;colon",
    "brace{x}",
    "tilde~",
    "dollar$HOME",
    "at@sign",
    "comma,name",
    "x" * 200,
    "\\#123-looks-escaped",
)
NEWLINE_NAME = "new\nline"


@dataclass(frozen=True)
class TreeSpec:
    files: int = 100
    total_bytes: int = 1_000_000
    max_depth: int = 3
    fanout: int = 8
    seed: int = 1
    base_mtime: int = 1_700_000_000


def generate_tree(root: Path, spec: TreeSpec) -> list[str]:
    """Write ``spec.files`` files under ``root`` with sizes summing to about ``total_bytes``; returns
    their relative paths."""
    rng = random.Random(spec.seed)
    root.mkdir(parents=True, exist_ok=True)
    dirs = [""]
    for depth in range(1, spec.max_depth + 1):
        for parent in [d for d in dirs if d.count("/") == depth - 2 or (depth == 1 and d == "")]:
            for n in range(rng.randint(1, spec.fanout)):
                dirs.append(f"{parent}/d{depth}-{n}".lstrip("/"))
    mean = max(spec.total_bytes // max(spec.files, 1), 1)
    paths = []
    for index in range(spec.files):
        directory = rng.choice(dirs)
        size = max(int(rng.expovariate(1 / mean)), 0) if index % 10 else mean
        name = f"f{index:07d}.bin"
        rel = f"{directory}/{name}".lstrip("/")
        write_file(root / rel, rng.randbytes(size), spec.base_mtime + index)
        paths.append(rel)
    return paths


def write_file(path: Path, data: bytes, mtime: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def add_hostile_names(root: Path, include_newline: bool = False, mtime: int = 1_700_000_000) -> list[str]:
    """Files with every hostile name, at the top and nested, plus a deep path; returns their paths."""
    names = list(HOSTILE_NAMES) + ([NEWLINE_NAME] if include_newline else [])
    written = []
    for index, name in enumerate(names):
        for rel in (name, f"nest ed/{name}/inner {name}"):
            write_file(root / rel, f"content of {rel!r}\n".encode(), mtime + index)
            written.append(rel)
    deep = "/".join(f"level{n}" for n in range(30)) + "/bottom.txt"
    write_file(root / deep, b"deep\n", mtime)
    written.append(deep)
    return written


def mutate(root: Path, paths: list[str], fraction: float, seed: int = 2) -> dict[str, list[str]]:
    """Change, add and delete about ``fraction`` of the files each; returns what was done."""
    rng = random.Random(seed)
    count = max(1, int(len(paths) * fraction))
    chosen = rng.sample(paths, min(len(paths), 2 * count))
    changed, deleted = chosen[:count], chosen[count:]
    for rel in changed:
        target = root / rel
        write_file(target, target.read_bytes() + b"changed", int(target.stat().st_mtime) + 3600)
    for rel in deleted:
        (root / rel).unlink()
    added = []
    for n in range(count):
        rel = f"added/n{seed}-{n}.bin"
        write_file(root / rel, rng.randbytes(1000), 1_750_000_000 + n)
        added.append(rel)
    return {"changed": changed, "deleted": deleted, "added": added}


def openvz_like(root: Path, seed: int = 7) -> list[str]:
    """A small download tree shaped like OpenVZ's: versioned directories, a yum repository with
    repodata/repomd.xml, checksum files, a README and a ``current`` symlink."""
    rng = random.Random(seed)
    written = []
    base = 1_720_000_000
    for number, version in enumerate(("7.0.20", "7.0.21", "7.0.22")):
        mtime = base + number * 86_400
        for name in (f"openvz-iso-{version}.iso", f"vzkernel-{version}.x86_64.rpm", f"vzctl-{version}.x86_64.rpm"):
            rel = f"virtuozzo/releases/{version}/x86_64/os/Packages/{name}"
            write_file(root / rel, rng.randbytes(rng.randint(20_000, 200_000)), mtime)
            written.append(rel)
        repodata = f"virtuozzo/releases/{version}/x86_64/os/repodata"
        write_file(root / f"{repodata}/primary.xml.gz", rng.randbytes(3000), mtime)
        write_file(root / f"{repodata}/repomd.xml", f"<repomd><revision>{mtime}</revision></repomd>\n".encode(), mtime)
        sums = "".join(f"{rng.randbytes(32).hex()}  {name}\n" for name in ("a.iso", "b.rpm"))
        write_file(root / f"virtuozzo/releases/{version}/SHA256SUMS", sums.encode(), mtime)
        written += [f"{repodata}/primary.xml.gz", f"{repodata}/repomd.xml", f"virtuozzo/releases/{version}/SHA256SUMS"]
    write_file(root / "README", b"OpenVZ downloads mirror (sample data generated by mirrorkeeper demo)\n", base)
    (root / "contrib").mkdir(exist_ok=True)
    current = root / "virtuozzo/releases/current"
    if not current.is_symlink():
        os.symlink("7.0.22", current)
    return [*written, "README"]
