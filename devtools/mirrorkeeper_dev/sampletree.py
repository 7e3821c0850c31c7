"""Generated upstream trees shared by the tests, the benchmarks and the demo.

Deterministic for a given seed: sizes, nesting, names (including the hostile ones rsync can
carry), mtimes; plus mutations (change, add, delete a share of files) for incremental runs.
"""

import gzip
import hashlib
import os
import random
import time
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


# What each suite of the Debian-like archive holds: (package, version).
DEBIAN_SUITES = {
    "bookworm": (("hello", "2.10-3"), ("libzstd1", "1.5.4+dfsg2-5"), ("rsync", "3.2.7-1"), ("vzctl", "4.11.1-1")),
    "trixie": (("hello", "2.10-3"), ("libzstd1", "1.5.6+dfsg-1"), ("rsync", "3.4.1-1"), ("vzctl", "4.11.1-1")),
}
DEBIAN_CODENAMES = {"bookworm": "stable", "trixie": "testing"}
# The package debian_like's ``uploads`` give new revisions, in one suite: an update rewrites that suite alone.
DEBIAN_UPLOADED = ("trixie", "rsync")


def debian_like(root: Path, seed: int = 11, uploads: int = 0) -> list[str]:
    """A small archive shaped like Debian's: ``pool/main/<x>/<package>/*.deb`` and, per suite,
    ``dists/<suite>/Release``, ``InRelease`` and ``main/binary-amd64/Packages`` (plain and gzipped)
    whose sizes and SHA-256 sums are those of the files they name (InRelease's signature is a
    placeholder). ``uploads`` is how many new revisions of rsync the testing suite has had: each
    replaces the previous one in pool/, as the archive software does, and rewrites that suite's
    indices while the stable suite stays byte for byte the same. Returns every file's path."""
    base = 1_717_200_000  # 2024-06-01
    written: set[str] = set()
    for number, (suite, packages) in enumerate(DEBIAN_SUITES.items()):
        mtime = base + number * 86_400 + (uploads * 3_600 if suite == DEBIAN_UPLOADED[0] else 0)
        stanzas = []
        for package, first_version in packages:
            version = first_version
            if (suite, package) == DEBIAN_UPLOADED:
                upstream_version, _, revision = first_version.rpartition("-")
                version = f"{upstream_version}-{int(revision) + uploads}"
            rel = f"pool/main/{_pool_letter(package)}/{package}/{package}_{version}_amd64.deb"
            # Seeded by name and version: a package has the same bytes in every suite and every run.
            rng = random.Random(f"{seed}/{package}/{version}")
            deb = b"!<arch>\ndebian-binary   " + rng.randbytes(rng.randint(8_000, 60_000))
            if rel not in written:
                write_file(root / rel, deb, mtime)
                written.add(rel)
            stanzas.append(
                f"Package: {package}\nVersion: {version}\nArchitecture: amd64\n"
                f"Maintainer: mirrorkeeper sample <sample@example.invalid>\nFilename: {rel}\nSize: {len(deb)}\n"
                f"SHA256: {hashlib.sha256(deb).hexdigest()}\nDescription: sample package {package}\n"
            )
        packages_text = "\n".join(stanzas).encode()
        indices = {
            "main/binary-amd64/Packages": packages_text,
            # mtime=0 in the gzip header: the same Packages always compresses to the same bytes.
            "main/binary-amd64/Packages.gz": gzip.compress(packages_text, mtime=0),
        }
        sums = "".join(f" {hashlib.sha256(body).hexdigest()} {len(body)} {name}\n" for name, body in indices.items())
        release = (
            f"Origin: mirrorkeeper sample\nLabel: Debian-like\nSuite: {DEBIAN_CODENAMES[suite]}\nCodename: {suite}\n"
            f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S UTC', time.gmtime(mtime))}\nArchitectures: amd64\n"
            f"Components: main\nSHA256:\n{sums}"
        ).encode()
        signature = hashlib.sha256(release).hexdigest()
        indices["Release"] = release
        indices["InRelease"] = (
            b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n"
            + release
            + f"-----BEGIN PGP SIGNATURE-----\n\nplaceholder {signature}\n-----END PGP SIGNATURE-----\n".encode()
        )
        for name, body in indices.items():
            write_file(root / f"dists/{suite}/{name}", body, mtime)
            written.add(f"dists/{suite}/{name}")
    # The archive keeps no package that no suite names any more.
    for package_file in (root / "pool").rglob("*.deb"):
        if package_file.relative_to(root).as_posix() not in written:
            package_file.unlink()
    return sorted(written)


def _pool_letter(package: str) -> str:
    """pool/'s directory for a package: its first letter, or 'lib' and the next one for libraries."""
    return package[:4] if package.startswith("lib") else package[0]
