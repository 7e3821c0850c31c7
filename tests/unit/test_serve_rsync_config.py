"""serve-rsync's settings: its defaults, the checks on each, and the modules a single mirror or a
host's config file makes (one per mirror, named by its path, '/' joined by '-')."""

from pathlib import Path

import pytest

from mirrorkeeper.config import load_rsync_serve_config
from mirrorkeeper.errors import ConfigError
from mirrorkeeper.serve.rsyncd import ModuleView, render_config


def test_a_single_mirror_is_one_module_with_the_documented_defaults(tmp_path: Path) -> None:
    config = load_rsync_serve_config({"bucket": "my-mirror", "replica_dir": str(tmp_path)}, {})
    (module,) = config.modules
    assert (module.name, module.layout.served_prefix, module.title) == ("mirror", "pub/", "my-mirror")
    assert config.replica_dir == tmp_path and config.host_name == "my-mirror"
    # docs/rsync.md: port 873, 16 downloads at once, a look every 30 s, 64M left free
    assert (config.port, config.download_concurrency, config.poll_interval) == (873, 16, 30.0)
    assert config.replica_reserve == 64 * 1024**2
    # no health check port and no wake-up queue unless given
    assert (config.health_port, config.wake_queue_url) == (None, "")


def test_flags_and_environment_set_them(tmp_path: Path) -> None:
    env = {
        "MIRRORKEEPER_REPLICA_DIR": str(tmp_path),
        "MIRRORKEEPER_POLL_INTERVAL": "2m",
        "MIRRORKEEPER_DOWNLOAD_CONCURRENCY": "4",
    }
    flags = {"bucket": "my-mirror", "module": "openvz-download", "replica_reserve": "1G", "download_concurrency": "8"}
    queue = "https://sqs.us-east-1.amazonaws.com/123456789012/mk-RsyncWakeQueue-1"
    env |= {"MIRRORKEEPER_WAKE_QUEUE_URL": queue + "/", "MIRRORKEEPER_HEALTH_PORT": "8874"}
    config = load_rsync_serve_config(flags, env)
    assert (config.wake_queue_url, config.health_port) == (queue, 8874)
    assert config.modules[0].name == "openvz-download"
    assert (config.poll_interval, config.download_concurrency, config.replica_reserve) == (120.0, 8, 1024**3)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"module": "linux/debian"}, "--module"),  # rsync ends a module's name at the first '/'
        ({"module": "a b"}, "--module"),  # rsyncd.conf's section headers carry no spaces
        ({"download_concurrency": "0"}, "--download-concurrency"),
        ({"download_concurrency": "257"}, "--download-concurrency"),
        ({"wake_queue_url": "sqs.us-east-1.amazonaws.com/123456789012/wake"}, "--wake-queue-url"),  # no scheme
        ({"wake_queue_url": "https://sqs.us-east-1.amazonaws.com/wake"}, "--wake-queue-url"),  # no account
        ({"health_port": "0"}, "--health-port"),  # a port the load balancer can be told
        ({"health_port": "65536"}, "--health-port"),
        ({"poll_interval": "soon"}, "--poll-interval"),
        ({"replica_reserve": "lots"}, "--replica-reserve"),
        ({"replica_dir": "/nonexistent/replica"}, "--replica-dir"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_flag(tmp_path: Path, flags: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_rsync_serve_config({"bucket": "my-mirror", "replica_dir": str(tmp_path), **flags}, {})


def test_the_replica_directory_must_be_given(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--replica-dir DIR"):
        load_rsync_serve_config({"bucket": "my-mirror"}, {})


HOST = """
[host]
name = "mirrors.example.org"
bucket = "my-mirror-bucket"

[mirrors.openvz]
upstream = "rsync://download.openvz.org/openvz-download/"

[mirrors.debian]
upstream = "rsync://ftp.debian.org/debian/"
path = "linux/debian"
"""


def test_a_hosts_mirrors_are_modules_named_by_their_paths(tmp_path: Path) -> None:
    host = tmp_path / "mirrors.toml"
    host.write_text(HOST)
    config = load_rsync_serve_config({"config": str(host), "replica_dir": str(tmp_path)}, {})
    modules = {m.name: (m.title, m.layout.served_prefix, m.layout.bucket) for m in config.modules}
    assert modules == {
        "openvz": ("openvz", "pub/openvz/", "my-mirror-bucket"),
        "linux-debian": ("debian", "pub/linux/debian/", "my-mirror-bucket"),
    }
    assert config.host_name == "mirrors.example.org"


def test_two_paths_making_one_module_name_are_refused(tmp_path: Path) -> None:
    host = tmp_path / "mirrors.toml"
    host.write_text(HOST + '\n[mirrors.other]\nupstream = "rsync://h/m/"\npath = "linux-debian"\n')
    with pytest.raises(ConfigError, match="rsync module name 'linux-debian'"):
        load_rsync_serve_config({"config": str(host), "replica_dir": str(tmp_path)}, {})


def test_the_daemon_keeps_its_idle_timeout_without_a_nagle_stall_per_connection(tmp_path: Path) -> None:
    """A timeout makes the daemon send the client a small message of its own, which Nagle's algorithm
    held for the client's delayed ACK (40 ms a connection, issue 15's pull throughput): TCP_NODELAY."""
    view = ModuleView("mirror", "my-mirror", tmp_path / "mirror", ready=True)
    lines = render_config([view], tmp_path, tmp_path / "empty", max_connections=256, timeout=300).splitlines()
    assert "timeout = 300" in lines
    assert "socket options = TCP_NODELAY" in lines
    # A global setting: the daemon applies it to its listening socket, before the first module.
    assert lines.index("socket options = TCP_NODELAY") < lines.index("[mirror]")
