"""Bundle this machine's rsync, with the libraries it needs, into the verify Lambdas' layer.

The Lambda runtime (Amazon Linux 2023, glibc 2.34) has no rsync, and without one the deployed verify
can only check the rsync front end's handshake. ``make build`` (the layer's makefile target) runs
``python -m mirrorkeeper_dev.lambda_rsync LAYER_DIR``, which puts the binary and every library
``ldd`` names, glibc's own excepted, under ``rsync/`` of the layer, and ``bin/rsync`` (``/opt/bin``
is on the runtime's PATH) runs it with those libraries ahead of the runtime's.

Every file must need no glibc symbol newer than the runtime's, read from its ELF version needs. A
machine whose rsync does not qualify (another OS, another architecture, a newer glibc) builds the
layer without it, says so in one line, and the deployed verify checks the handshake only.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path

RUNTIME_GLIBC = (2, 34)  # Amazon Linux 2023, under the python3.13 runtime
# Loaded from the runtime itself: glibc's libraries and the kernel's vDSO.
GLIBC_LIBRARIES = re.compile(r"^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libresolv)\b")
WRAPPER = """#!/bin/sh
# rsync for the verify Lambdas, bundled by mirrorkeeper_dev.lambda_rsync: its libraries, not the runtime's.
bundle="${0%/*}/../rsync"  # no dirname: nothing but the shell is assumed
LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$bundle/rsync" "$@"
"""
EM_X86_64 = 62
SHT_GNU_VERNEED = 0x6FFFFFFE


class NotBundledError(Exception):
    """Why this machine's rsync cannot run in the Lambda runtime."""


def glibc_needed(path: Path) -> tuple[int, int]:
    """The newest GLIBC_x.y version ``path`` (an x86-64 ELF file) asks for, (0, 0) for none."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise NotBundledError(f"{path} is not a 64-bit little-endian ELF file")
    if struct.unpack_from("<H", data, 18)[0] != EM_X86_64:
        raise NotBundledError(f"{path} is not built for x86-64, the functions' architecture")
    (section_offset,) = struct.unpack_from("<Q", data, 40)
    entry_size, count = struct.unpack_from("<HH", data, 58)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, section_offset + i * entry_size) for i in range(count)]
    newest = (0, 0)
    for section in sections:
        if section[1] != SHT_GNU_VERNEED:
            continue
        strings = sections[section[6]][4]  # the linked string table's file offset
        need = section[4]
        while True:
            _, aux_count, _, aux, next_need = struct.unpack_from("<HHIII", data, need)
            entry = need + aux
            for _ in range(aux_count):
                _, _, _, name, next_aux = struct.unpack_from("<IHHII", data, entry)
                version = data[strings + name : data.index(b"\0", strings + name)].decode()
                if match := re.fullmatch(r"GLIBC_(\d+)\.(\d+)(?:\.\d+)?", version):
                    newest = max(newest, (int(match.group(1)), int(match.group(2))))
                entry += next_aux
            if not next_need:
                break
            need += next_need
    return newest


def libraries(binary: Path) -> list[Path]:
    """The shared libraries ``binary`` loads that the runtime does not provide, as ldd resolves them."""
    listed = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        raise NotBundledError(f"ldd cannot read {binary}: {listed.stderr.strip() or listed.stdout.strip()}")
    found = []
    for line in listed.stdout.splitlines():
        name, _, rest = line.strip().partition(" => ")
        if GLIBC_LIBRARIES.match(name) or not rest:
            continue
        target = rest.split(" (")[0].strip()
        if target == "not found":
            raise NotBundledError(f"{binary} needs {name}, which this machine lacks")
        found.append(Path(target))
    return found


def bundle(layer: Path, rsync: Path) -> list[Path]:
    """Copy ``rsync`` and its libraries into ``layer``; the files written. NotBundledError when one of
    them could not start in the runtime (nothing is written then)."""
    needed_libraries = libraries(rsync)
    files = [rsync.resolve(), *(library.resolve() for library in needed_libraries)]
    for path in files:
        if (needed := glibc_needed(path)) > RUNTIME_GLIBC:
            raise NotBundledError(
                f"{path} needs glibc {needed[0]}.{needed[1]}, newer than the Lambda runtime's "
                f"{RUNTIME_GLIBC[0]}.{RUNTIME_GLIBC[1]}"
            )
    home = layer / "rsync"
    (home / "lib").mkdir(parents=True, exist_ok=True)
    written = [Path(shutil.copy2(files[0], home / "rsync"))]
    # Under the name the loader looks for (the soname ldd found), not the versioned file it links to.
    for library, path in zip(needed_libraries, files[1:], strict=True):
        written.append(Path(shutil.copy2(path, home / "lib" / library.name)))
    wrapper = layer / "bin" / "rsync"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(WRAPPER)
    for path in [*written, wrapper]:
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return [*written, wrapper]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mirrorkeeper_dev.lambda_rsync LAYER_DIR", file=sys.stderr)
        return 2
    layer = Path(args[0])
    found = shutil.which("rsync")
    try:
        if found is None or not sys.platform.startswith("linux"):
            raise NotBundledError("no Linux rsync on this machine's PATH")
        written = bundle(layer, Path(found))
    except NotBundledError as exc:
        print(
            f"lambda_rsync: warning: the layer is built without rsync ({exc}); the deployed verify will check "
            "the rsync front end's handshake only. Build on a Linux x86-64 machine with rsync to bundle it.",
            file=sys.stderr,
        )
        return 0
    size = sum(os.path.getsize(path) for path in written)
    print(f"lambda_rsync: bundled {found} and {len(written) - 2} libraries into {layer} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
