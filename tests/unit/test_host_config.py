"""A host's config file (mirrors.toml): one [host] table, one [mirrors.NAME] table per mirror. Every
mistake is a ConfigError naming the mirror and the key, found before anything runs."""

from pathlib import Path

import pytest

from mirrorkeeper.config import ConfigFile, mirror_url, resolve, sync_config
from mirrorkeeper.errors import ConfigError
from mirrorkeeper.host import Schedule
from mirrorkeeper.layout import MirrorLayout

HOST = """
[host]
name = "mirrors.example.org"
bucket = "my-mirror-bucket"
location = "Country, State, City"
contact = "mirroradmin@example.org"
max_delete_percent = 20

[mirrors.openvz]
upstream = "rsync://download.openvz.org/openvz-download/"
path = "openvz"
interval = "1h"
minute = 7
exclude = ["*.tmp"]
max_delete_percent = 10
enabled = true

[mirrors.debian-security]
upstream = "rsync://security.debian.org/debian-security/"
interval = "6h"
rsync_user = "mirror"
rsync_password = "env:DEBIAN_RSYNC_PASSWORD"
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mirrors.toml"
    path.write_text(text)
    return str(path)


def test_the_contract_shape_reads_and_each_mirror_gets_its_own_settings(tmp_path: Path) -> None:
    config = write(tmp_path, HOST)
    # GIVEN the host file of the contract WHEN each mirror's sync settings are resolved
    openvz = sync_config(resolve("sync", {"config": config}, {}, mirror="openvz"))
    security = sync_config(resolve("sync", {"config": config}, {}, mirror="debian-security"))
    # THEN each lives under its path, with its own values over the host's, the host's over the defaults
    assert openvz.layout.served_prefix == "pub/openvz/" and openvz.layout.state_prefix == "state/openvz/"
    assert security.layout.served_prefix == "pub/debian-security/"  # the path defaults to the name
    assert (openvz.max_delete_percent, security.max_delete_percent) == (10, 20)
    assert openvz.exclude == ("*.tmp",) and security.exclude == ()
    assert openvz.layout.bucket == security.layout.bucket == "my-mirror-bucket"
    assert openvz.mirror_name == "openvz" and openvz.host_name == "mirrors.example.org"
    assert security.upstream == "rsync://mirror@security.debian.org/debian-security/"
    assert security.rsync_password == "env:DEBIAN_RSYNC_PASSWORD" and security.sync_interval == 6 * 3600
    # AND flags still win over the file
    flagged = sync_config(resolve("sync", {"config": config, "max_delete_percent": "33"}, {}, mirror="openvz"))
    assert flagged.max_delete_percent == 33


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (HOST + "\n[mirrors.epel]\npath = 'epel'\n", r"\[mirrors.epel\] has no upstream"),
        (
            HOST + "\n[mirrors.epel]\nupstream = 'rsync://h/m/'\ncolour = 'red'\n",
            r"\[mirrors.epel\] unknown key 'colour'",
        ),
        (
            HOST + "\n[mirrors.epel]\nupstream = 'rsync://h/m/'\nbucket = 'x'\n",
            r"\[mirrors.epel\] unknown key 'bucket'.*\[host\]",
        ),
        (
            HOST + "\n[mirrors.epel]\nupstream = 'rsync://h/m/'\npath = 'openvz'\n",
            r"\[mirrors.epel\] path 'openvz'.*share or nest",
        ),
        (HOST + "\n[mirrors.epel]\nupstream = 'rsync://h/m/'\npath = 'openvz/epel'\n", r"share or nest"),
        (HOST + "\n[mirrors.epel]\nupstream = 'rsync://h/m/'\npath = '../x'\n", r"\[mirrors.epel\] key 'path'"),
        (HOST + "\n[mirrors.Bad_Name]\nupstream = 'rsync://h/m/'\n", r"\[mirrors.Bad_Name\].*lowercase"),
        (
            HOST + "\n[mirrors.epel]\nupstream = 'rsync://h/m/'\nrsync_password = 'hunter2'\n",
            r"\[mirrors.epel\] key 'rsync_password'.*secret given in clear",
        ),
        (
            HOST + "\n[mirrors.epel]\nupstream = 'rsync://u:hunter2@h/m/'\n",
            r"\[mirrors.epel\] key 'upstream'.*password in clear",
        ),
        (HOST + "\n[mirrors.epel]\nupstream = 'rsync://h/m/'\nminute = 75\n", r"\[mirrors.epel\] key 'minute'"),
        (HOST + "\n[mirrors.debiansecurity]\nupstream = 'rsync://h/m/'\n", r"differ only by hyphens"),
        (HOST.replace('name = "mirrors.example.org"', 'name = "x"\ncolour = 1'), r"\[host\] unknown key 'colour'"),
    ],
)
def test_a_bad_host_file_names_the_mirror_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ConfigFile.read(write(tmp_path, text))


def test_an_unknown_mirror_is_named_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no mirror 'centos'.*openvz, debian-security"):
        resolve("sync", {"config": write(tmp_path, HOST), "mirror": "centos"}, {})


@pytest.mark.parametrize(
    ("interval", "minute", "expression", "now", "next_run"),
    [
        (3600, 7, "cron(7 */1 * * ? *)", 1_000_000_000, 1_000_001_220),  # 01:46:40 UTC → 02:07:00
        (6 * 3600, 37, "cron(37 */6 * * ? *)", 86400 * 10 + 3600, 86400 * 10 + 6 * 3600 + 37 * 60),
        (86400, 0, "cron(0 0 * * ? *)", 86400 * 3 + 1, 86400 * 4),
        (900, 5, "cron(5/15 * * * ? *)", 3600 * 5 + 60 * 21, 3600 * 5 + 60 * 35),
    ],
)
def test_a_schedule_is_one_cron_expression_and_its_next_run(
    interval: float, minute: int, expression: str, now: float, next_run: float
) -> None:
    schedule = Schedule(interval, minute)
    assert schedule.expression == expression
    assert schedule.next_after(now) == next_run


@pytest.mark.parametrize(("interval", "minute"), [(5 * 3600, 0), (7 * 60, 0), (90, 0), (1800, 45)])
def test_intervals_no_schedule_can_keep_are_refused(interval: float, minute: int) -> None:
    with pytest.raises(ConfigError, match=r"interval|minute"):
        Schedule(interval, minute)


def test_a_nested_mirrors_urls_are_its_path_over_http_and_ftp_and_its_module_over_rsync() -> None:
    layout = MirrorLayout.create("my-mirror-bucket", path="linux/debian")
    assert mirror_url("https://mirrors.test/", layout) == "https://mirrors.test/linux/debian/"
    assert mirror_url("ftp://mirrors.test/", layout) == "ftp://mirrors.test/linux/debian/"
    # rsync takes a module name up to the first '/': the module serve-rsync names after the path
    assert mirror_url("rsync://mirrors.test/", layout) == "rsync://mirrors.test/linux-debian/"
    # a mirror at the root keeps the URL given, and no URL stays none
    assert mirror_url("rsync://mirrors.test/mirror/", MirrorLayout.create("b")) == "rsync://mirrors.test/mirror/"
    assert mirror_url("", layout) == ""
