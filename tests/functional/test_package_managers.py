"""Real package managers against ``serve-http``: ``apt-get`` and ``dnf`` read repositories built by
the distributions' own tools, served upstream by a real rsync daemon and synced by the real CLI.

A flat apt repository (``deb URI ./``) makes apt ask for ``/debian/./InRelease`` and for every
package as ``/debian/./name.deb``: the dot segments routing resolves (docs/frontends.md, "Paths").
Nothing here is skipped: a missing tool fails the test and names its Debian package, which
``make install`` installs.
"""

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mirrorkeeper_dev.rsyncd import RsyncDaemon
from tests.support import BUCKET, run_cli, serve_cli

# A "+" in a name each: S3 reads a raw "+" in a path as a space.
FLAT_PACKAGES = ("libfoo+bar", "flat-hello")
DISTS_PACKAGES = ("libbaz+qux", "dists-hello")
DEBIAN_PACKAGE_OF = {
    "dpkg-deb": "dpkg",
    "apt-get": "apt",
    "apt-ftparchive": "apt-utils",
    "gpg": "gpg",
    "gpgconf": "gpgconf",
    "rpmbuild": "rpm",
    "createrepo_c": "createrepo-c",
    "dnf": "dnf",
}


def need(*tools: str) -> None:
    missing = [f"{tool} (Debian package {DEBIAN_PACKAGE_OF[tool]})" for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"not installed: {', '.join(missing)}; `make install` installs them")


def run(
    args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> "subprocess.CompletedProcess[str]":
    """Run a tool to completion; the test fails with everything it said unless it succeeded."""
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)
    if "No such command: download" in result.stderr:  # dnf without its plugins
        pytest.fail("dnf has no download command: install the Debian package dnf-plugins-core (`make install`)")
    assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    return result


def client_env(**extra: str) -> dict[str, str]:
    """The environment without proxies (the mirror is on loopback) and with messages in English."""
    env = {name: value for name, value in os.environ.items() if not name.lower().endswith("_proxy")}
    return {**env, "LC_ALL": "C", **extra}


def sync(daemon: RsyncDaemon, endpoint: str, *extra: str) -> None:
    result = run_cli(["sync", "--upstream", daemon.url, "--bucket", BUCKET, *extra], endpoint)
    assert result.returncode == 0, result.stderr


# -- apt ------------------------------------------------------------------------------------------


@pytest.fixture
def signing_key() -> Iterator[tuple[dict[str, str], Path]]:
    """A throwaway GnuPG home with one signing key: (the environment that uses it, the public keyring
    apt is told to trust for the repository). The agent gpg starts is stopped afterwards."""
    need("gpg", "gpgconf")
    home = Path(tempfile.mkdtemp(prefix="gnupg-"))  # short: the agent's socket path has a length limit
    env = client_env(GNUPGHOME=str(home))
    try:
        run(
            ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "mirrorkeeper tests", "ed25519", "sign", "never"],
            env=env,
        )
        keyring = home / "repository.gpg"
        run(["gpg", "--batch", "--output", str(keyring), "--export"], env=env)
        yield env, keyring
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True, timeout=30, check=False)
        shutil.rmtree(home, ignore_errors=True)


def build_deb(name: str, into: Path, scratch: Path) -> None:
    root = scratch / name
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr/share/doc" / name).mkdir(parents=True)
    (root / "usr/share/doc" / name / "hello").write_text(f"hello from {name}\n")
    (root / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: mirrorkeeper tests <tests@example.org>\n"
        "Description: a package mirrorkeeper's tests build\n"
    )
    into.mkdir(parents=True, exist_ok=True)
    run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(into / f"{name}_1.0_all.deb")])


def write_packages(repository: Path, scanned: str, packages_dir: Path) -> None:
    """Packages and Packages.gz for the .deb files under ``scanned`` (relative to the repository
    root, which the packages' Filename fields are relative to)."""
    packages_dir.mkdir(parents=True, exist_ok=True)
    (packages_dir / "Packages").write_text(run(["apt-ftparchive", "packages", scanned], cwd=repository).stdout)
    run(["gzip", "-9kn", str(packages_dir / "Packages")])


def sign_release(release_dir: Path, gpg_env: dict[str, str], *fields: tuple[str, str]) -> None:
    """Release (its checksums of the indexes below ``release_dir``) and its clear-signed InRelease."""
    options = [f"-oAPT::FTPArchive::Release::{name}={value}" for name, value in fields]
    (release_dir / "Release").write_text(run(["apt-ftparchive", *options, "release", "."], cwd=release_dir).stdout)
    inrelease, release = str(release_dir / "InRelease"), str(release_dir / "Release")
    run(["gpg", "--batch", "--yes", "--clearsign", "--output", inrelease, release], env=gpg_env)


def apt_get(home: Path, *args: str, cwd: Path | None = None) -> str:
    """``apt-get ARGS`` with a configuration of its own: this machine's apt.conf.d (hooks that clean
    the system's cache, proxies) is not read, and lists, cache and status live under ``home``."""
    config = home / "apt.conf"
    if not config.exists():
        for folder in ("state/lists/partial", "cache/archives/partial", "log"):
            (home / folder).mkdir(parents=True)
        (home / "status").touch()
        settings = {
            "Dir::Etc::Main": "/dev/null",
            "Dir::Etc::Parts": "/dev/null",
            "Dir::Etc::SourceList": f"{home}/sources.list",
            "Dir::Etc::SourceParts": "/dev/null",
            "Dir::Etc::Preferences": "/dev/null",
            "Dir::Etc::PreferencesParts": "/dev/null",
            "Dir::Etc::Trusted": "/dev/null",
            "Dir::Etc::TrustedParts": "/dev/null",
            "Dir::State": f"{home}/state",
            "Dir::State::status": f"{home}/status",
            "Dir::Cache": f"{home}/cache",
            "Dir::Log": f"{home}/log",
            "APT::Architecture": "amd64",
            "APT::Sandbox::User": "root",  # the _apt user cannot write into the test's directories
            "Acquire::http::Proxy": "DIRECT",
        }
        config.write_text("".join(f'{name} "{value}";\n' for name, value in settings.items()))
    result = run(["apt-get", "-o", "Debug::Acquire::http=true", *args], cwd=cwd, env=client_env(APT_CONFIG=str(config)))
    assert not re.search(r"^[WE]:", result.stderr, re.MULTILINE), result.stderr  # warnings too: nothing fell back
    return result.stdout + result.stderr


def requested(output: str) -> list[str]:
    """The request targets apt sent (its Debug::Acquire::http output)."""
    return re.findall(r"^GET (\S+) HTTP/1\.1$", output, re.MULTILINE)


@pytest.mark.usefixtures("s3")
def test_apt_get_updates_and_downloads_from_a_flat_and_a_dists_repository(
    upstream: Path,
    rsync_daemon: Callable[[Path], RsyncDaemon],
    endpoint: str,
    signing_key: tuple[dict[str, str], Path],
    tmp_path: Path,
) -> None:
    need("dpkg-deb", "apt-ftparchive", "apt-get")
    gpg_env, keyring = signing_key
    # GIVEN upstream: a flat repository (debian/, "deb URI ./") and a dists/ one (apt/), both signed,
    # each with a "+" in a package name
    flat, dists = upstream / "debian", upstream / "apt"
    for name in FLAT_PACKAGES:
        build_deb(name, flat, tmp_path / "build")
    for name in DISTS_PACKAGES:
        build_deb(name, dists / "pool/main", tmp_path / "build")
    write_packages(flat, ".", flat)
    sign_release(flat, gpg_env)
    write_packages(dists, "pool", dists / "dists/stable/main/binary-amd64")
    suite = (("Suite", "stable"), ("Codename", "stable"), ("Components", "main"), ("Architectures", "amd64"))
    sign_release(dists / "dists/stable", gpg_env, *suite)
    # ... synced into the bucket by the real CLI and served by serve-http
    sync(rsync_daemon(upstream), endpoint)
    home, downloads = tmp_path / "apt", tmp_path / "downloads"
    home.mkdir()
    downloads.mkdir()
    with serve_cli("serve-http", endpoint) as port:
        (home / "sources.list").write_text(
            f"deb [signed-by={keyring}] http://127.0.0.1:{port}/debian ./\n"
            f"deb [signed-by={keyring}] http://127.0.0.1:{port}/apt stable main\n"
        )
        # WHEN apt-get updates, then downloads every package of both
        update = apt_get(home, "update")
        download = apt_get(home, "download", *FLAT_PACKAGES, *DISTS_PACKAGES, cwd=downloads)
    # THEN it asked for the flat repository through "./" and verified both signed indexes
    assert "/debian/./InRelease" in requested(update), update
    assert "/apt/dists/stable/InRelease" in requested(update), update
    lists = home / "state/lists"
    assert (lists / f"127.0.0.1:{port}_debian_._InRelease").read_bytes() == (flat / "InRelease").read_bytes()
    assert (lists / f"127.0.0.1:{port}_apt_dists_stable_InRelease").read_bytes() == (
        dists / "dists/stable/InRelease"
    ).read_bytes()
    # ... and fetched every package, flat ones through "./" too, as upstream's bytes
    assert "/debian/./libfoo%2bbar_1.0_all.deb" in requested(download), download  # apt's own escape
    for name, folder in [(n, flat) for n in FLAT_PACKAGES] + [(n, dists / "pool/main") for n in DISTS_PACKAGES]:
        deb = f"{name}_1.0_all.deb"
        assert (downloads / deb).read_bytes() == (folder / deb).read_bytes(), download


# -- dnf ------------------------------------------------------------------------------------------

SPEC = """Name: {name}
Version: 1.0
Release: 1
Summary: a package mirrorkeeper's tests build
License: MIT
BuildArch: noarch

%description
A package mirrorkeeper's tests build.

%install
mkdir -p %{{buildroot}}/usr/share/{name}
echo "hello from {name}" > %{{buildroot}}/usr/share/{name}/hello

%files
/usr/share/{name}/hello
"""


def build_rpms(repository: Path, scratch: Path, *names: str) -> list[Path]:
    """``rpmbuild -bb`` of tiny noarch packages into ``repository``/Packages; returns the .rpm files."""
    scratch.mkdir(parents=True, exist_ok=True)
    specs = [scratch / f"{name}.spec" for name in names]
    for name, spec in zip(names, specs, strict=True):
        spec.write_text(SPEC.format(name=name))
    topdir, rpmdir = scratch / "rpmbuild", repository / "Packages"
    run(
        [
            "rpmbuild",
            "--quiet",
            "--define",
            f"_topdir {topdir}",
            "--define",
            f"_rpmdir {rpmdir}",
            "-bb",
            *map(str, specs),
        ]
    )
    return [rpmdir / "noarch" / f"{name}-1.0-1.noarch.rpm" for name in names]


def dnf(home: Path, port: int, *args: str) -> None:
    """``dnf ARGS`` on the mirror's repository alone, with configuration, cache and install root under
    ``home`` (nothing of this machine's dnf is read or written)."""
    if not (home / "dnf.conf").exists():
        (home / "repos.d").mkdir(parents=True)
        (home / "dnf.conf").write_text("[main]\n")
    options = [
        f"--config={home}/dnf.conf",
        f"--setopt=reposdir={home}/repos.d",
        f"--setopt=cachedir={home}/cache",
        f"--installroot={home}/root",
        "--releasever=1",
        "--nogpgcheck",
        f"--repofrompath=mirror,http://127.0.0.1:{port}/yum/",
        "--repo=mirror",
    ]
    run(["dnf", *options, *args], env=client_env())


@pytest.mark.usefixtures("s3")
def test_dnf_reads_a_createrepo_repository_and_its_update(
    upstream: Path, rsync_daemon: Callable[[Path], RsyncDaemon], endpoint: str, tmp_path: Path
) -> None:
    need("rpmbuild", "createrepo_c", "dnf")
    # GIVEN upstream: a yum repository built by rpmbuild and createrepo_c (a "+" in a package name)
    repository, home, downloads = upstream / "yum", tmp_path / "dnf", tmp_path / "downloads"
    rpms = build_rpms(repository, tmp_path / "build", "libfoo+bar", "hello-mk")
    run(["createrepo_c", str(repository)])
    daemon = rsync_daemon(upstream)
    sync(daemon, endpoint)
    # The object cache would answer with the old repomd.xml for up to its TTL after the update
    # (docs/frontends.md); this test is about what dnf reads once the mirror shows the update.
    with serve_cli("serve-http", endpoint, "--cache-ttl", "0") as port:
        # WHEN dnf builds its cache and downloads every package
        dnf(home, port, "makecache")
        dnf(home, port, "download", f"--destdir={downloads}", "libfoo+bar", "hello-mk")
        # THEN it has upstream's bytes
        for rpm in rpms:
            assert (downloads / rpm.name).read_bytes() == rpm.read_bytes(), rpm.name
        # GIVEN an update published as upstreams do: a new package, then createrepo_c --update
        (new,) = build_rpms(repository, tmp_path / "build", "libnew+pkg")
        run(["createrepo_c", "--update", str(repository)])
        # The new metadata replaces 6 of this tiny mirror's 9 files: far over the deletion guard's
        # share, but below its floor (--min-delete-guard, 100 files), so published with no help.
        sync(daemon, endpoint)
        # WHEN dnf refreshes its metadata and downloads the new package
        dnf(home, port, "--refresh", "download", f"--destdir={downloads}", "libnew+pkg")
    # THEN it has the new package's bytes, and its cached metadata is upstream's new repomd.xml and
    # exactly the files that names
    assert (downloads / new.name).read_bytes() == new.read_bytes()
    (cached,) = (home / "cache").glob("mirror-*/repodata")
    assert (cached / "repomd.xml").read_bytes() == (repository / "repodata/repomd.xml").read_bytes()
    named = set(re.findall(r'<location href="repodata/([^"]+)"', (cached / "repomd.xml").read_text()))
    fetched = {path.name for path in cached.iterdir()} - {"repomd.xml"}
    assert fetched and fetched <= named, (fetched, named)
    for name in fetched:
        assert (cached / name).read_bytes() == (repository / "repodata" / name).read_bytes(), name
