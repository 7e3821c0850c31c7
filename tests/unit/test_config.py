"""Settings: flag > environment > config file > default, and errors that name their source."""

from pathlib import Path

import pytest

from mirrorkeeper.config import load_serve_config, load_sync_config, parse_size
from mirrorkeeper.errors import ConfigError

FLAGS = {"upstream": "rsync://up.example/mod", "bucket": "my-mirror"}


def test_flag_beats_environment_beats_file_beats_default(tmp_path: Path) -> None:
    config_file = tmp_path / "mk.toml"
    config_file.write_text('max-delete-percent = 30\nupload_concurrency = 3\nstaging_bytes = "1G"\n')
    env = {
        "MIRRORKEEPER_CONFIG": str(config_file),
        "MIRRORKEEPER_MAX_DELETE_PERCENT": "20",
        "MIRRORKEEPER_UPLOAD_CONCURRENCY": "5",
    }
    config = load_sync_config({**FLAGS, "upload_concurrency": "7"}, env)
    assert config.upload_concurrency == 7  # flag
    assert config.max_delete_percent == 20  # environment over file
    assert config.staging_bytes == 1024**3  # file
    assert config.lock_ttl == 900  # default


def test_upstream_gets_its_trailing_slash_and_prefix_is_normalised() -> None:
    config = load_sync_config({**FLAGS, "prefix": "/mirrors/openvz/"}, {})
    assert config.upstream == "rsync://up.example/mod/"
    assert config.layout.served_prefix == "mirrors/openvz/pub/"
    assert config.layout.state_prefix == "mirrors/openvz/state/"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"bucket": "my-mirror"}, "no upstream given"),
        ({"upstream": "rsync://h/m"}, "no bucket given"),
        ({**FLAGS, "upstream": "http://h/m/"}, "must be an rsync:// URL"),
        ({**FLAGS, "upstream": "rsync://h/"}, "names no module"),
        ({**FLAGS, "upstream": "rsync://h:99999/m/"}, "port"),
        ({**FLAGS, "bucket": "Bad_Bucket"}, "bucket name"),
        ({**FLAGS, "max_delete_percent": "150"}, "--max-delete-percent='150'"),
        ({**FLAGS, "staging_bytes": "lots"}, "--staging-bytes"),
        ({**FLAGS, "prefix": "a/../b"}, "'..'"),
        ({**FLAGS, "trace_path": "../x"}, "trace path"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_knob(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        load_sync_config(flags, {})


def test_environment_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="MIRRORKEEPER_LOCK_TTL='soon'"):
        load_sync_config(FLAGS, {"MIRRORKEEPER_LOCK_TTL": "soon"})


def test_missing_or_broken_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_sync_config({**FLAGS, "config": str(tmp_path / "nope.toml")}, {})
    broken = tmp_path / "broken.toml"
    broken.write_text("max-delete-percent = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_sync_config({**FLAGS, "config": str(broken)}, {})


@pytest.mark.parametrize(
    ("text", "size"),
    [("512M", 512 * 1024**2), ("2g", 2 * 1024**3), ("100", 100), ("1.5K", 1536), ("8GiB", 8 * 1024**3)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_the_ftp_servers_one_cpu_setting_can_be_turned_off_and_is_checked() -> None:
    assert load_serve_config({"bucket": "mirror-test"}, 21, {}).one_cpu is True
    assert load_serve_config({"bucket": "mirror-test", "one_cpu": "no"}, 21, {}).one_cpu is False
    assert load_serve_config({"bucket": "mirror-test"}, 21, {"MIRRORKEEPER_ONE_CPU": "false"}).one_cpu is False
    with pytest.raises(ConfigError, match="MIRRORKEEPER_ONE_CPU"):
        load_serve_config({"bucket": "mirror-test"}, 21, {"MIRRORKEEPER_ONE_CPU": "sometimes"})
