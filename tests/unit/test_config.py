"""Settings: flag > environment > config file > default, and errors that name their source."""

import argparse
import json
import re
from pathlib import Path

import pytest

from mirrorkeeper.cli import build_parser
from mirrorkeeper.config import Setting, load_serve_config, load_sync_config, parse_size, resolve, settings_for
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
    assert config.lock_ttl == 115  # default


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
        ({**FLAGS, "rsync_command": "/nonexistent/rsync -v"}, "'/nonexistent/rsync' is not installed"),
        ({**FLAGS, "late_patterns": ";;"}, "--late-patterns=';;' is invalid: names no pattern"),
        ({**FLAGS, "late_patterns": " "}, "names no pattern"),
        ({**FLAGS, "staging_dir": __file__}, "it is a file, not a directory"),
        ({**FLAGS, "busy_wait": "-5"}, "expected 0 (off) or a duration"),
        ({**FLAGS, "busy_wait": "30d"}, "0 (off) or more and at most"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_knob(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
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
    assert load_serve_config("serve-ftp", {"bucket": "mirror-test"}, {}).one_cpu is True
    assert load_serve_config("serve-ftp", {"bucket": "mirror-test", "one_cpu": "no"}, {}).one_cpu is False
    assert load_serve_config("serve-ftp", {"bucket": "mirror-test"}, {"MIRRORKEEPER_ONE_CPU": "false"}).one_cpu is False
    with pytest.raises(ConfigError, match="MIRRORKEEPER_ONE_CPU"):
        load_serve_config("serve-ftp", {"bucket": "mirror-test"}, {"MIRRORKEEPER_ONE_CPU": "sometimes"})


@pytest.mark.parametrize(
    ("settings", "cap"),
    [
        ({}, 16),  # no range: any free port serves, so nothing to stay below
        ({"max_connections_per_ip": "40"}, 40),
        ({"passive_ports": "60000-60015"}, 15),  # the template's default FtpPassivePorts
        ({"passive_ports": "60000-60003"}, 3),
        ({"passive_ports": "60000-60047"}, 16),
        ({"passive_ports": "60000-60001"}, 1),
        ({"passive_ports": "60000-60015", "max_connections_per_ip": "15"}, 15),
    ],
)
def test_ftp_sessions_per_address_stay_below_the_passive_ports(settings: dict[str, str], cap: int) -> None:
    assert load_serve_config("serve-ftp", {"bucket": "mirror-test", **settings}, {}).max_connections_per_ip == cap


@pytest.mark.parametrize(
    ("settings", "environ", "message"),
    [
        ({"passive_ports": "60000-60015", "max_connections_per_ip": "16"}, {}, "must be below the 16 ports"),
        ({"max_connections_per_ip": "5"}, {"MIRRORKEEPER_PASSIVE_PORTS": "60000-60003"}, "--max-connections-per-ip 5"),
        ({"passive_ports": "60000-60000"}, {}, "is one port"),
    ],
)
def test_an_ftp_cap_that_lets_one_address_hold_every_passive_port_is_refused(
    settings: dict[str, str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_serve_config("serve-ftp", {"bucket": "mirror-test", **settings}, environ)


def test_http_connections_per_address_know_no_passive_ports() -> None:
    assert load_serve_config("serve-http", {"bucket": "mirror-test"}, {}).max_connections_per_ip == 16


def test_the_masquerade_address_is_the_ipv4_address_pasv_replies_carry() -> None:
    config = load_serve_config("serve-ftp", {"bucket": "mirror-test", "masquerade_address": "192.0.2.10"}, {})
    assert config.masquerade_address == "192.0.2.10"
    for wrong in ("2001:db8::1", "ftp.example.org", "192.0.2.300"):
        with pytest.raises(ConfigError, match="expected an IPv4 address"):
            load_serve_config("serve-ftp", {"bucket": "mirror-test", "masquerade_address": wrong}, {})


# -- one declaration per setting -------------------------------------------------------------

COMMANDS = ("sync", "serve-http", "serve-ftp", "verify", "announce")
NOT_A_VALUE = "../\x01 not a value"


def command_parser(command: str) -> argparse.ArgumentParser:
    parser = build_parser(command)
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found: argparse.ArgumentParser = subparsers.choices[command]
    return found


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_is_a_declared_setting_with_its_variable_and_default_in_the_help(command: str) -> None:
    # GIVEN a command's parser, built from the declarations
    parser = command_parser(command)
    flags = {option for action in parser._actions for option in action.option_strings} - {"-h", "--help"}
    declared = settings_for(command)
    # THEN every flag is a setting (so it has an environment variable and a config file key), and back
    assert flags == {s.flag for s in declared.values()}
    helps = {
        s.flag: action.help for action in parser._actions for s in declared.values() if s.flag in action.option_strings
    }
    for name, setting in declared.items():
        assert setting.env in helps[setting.flag], name
        assert "(default: " in helps[setting.flag], name
        assert setting.env == "MIRRORKEEPER_" + name.upper()


def refused_value(setting: Setting) -> str | None:
    """A value the setting's parser refuses, or None when it takes anything (free text)."""
    for candidate in (NOT_A_VALUE, ""):
        try:
            setting.parse(candidate)
        except (ValueError, TypeError):
            return candidate
    return None


@pytest.mark.parametrize("command", COMMANDS)
def test_every_checked_setting_refuses_a_bad_value_from_each_source_and_names_it(command: str, tmp_path: Path) -> None:
    # GIVEN every setting of the command whose parser can refuse a value
    checked = {s.name: (s, bad) for s in settings_for(command).values() if (bad := refused_value(s)) is not None}
    assert len(checked) > len(settings_for(command)) // 2
    config_file = tmp_path / "mk.toml"
    for name, (setting, bad) in checked.items():
        # WHEN the value comes from the flag, the environment or the config file
        config_file.write_text(f"{name} = {json.dumps(bad)}\n")
        sources = [
            ({name: bad}, {}, setting.flag),
            ({}, {setting.env: bad}, setting.env),
            ({"config": str(config_file)}, {}, f"key {name!r}"),
        ]
        for flags, env, named in sources:
            # THEN it is a configuration error that names where the value came from
            with pytest.raises(ConfigError) as refused:
                resolve(command, flags, env)
            assert named in str(refused.value), (name, named, str(refused.value))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_setting_is_read_from_the_environment_and_the_file(command: str, tmp_path: Path) -> None:
    # GIVEN each setting's default written back as text (a valid value whatever the parser)
    for name, setting in settings_for(command).items():
        if setting.default_for(command) in (None, "") and not setting.switch:
            continue
        raw = "true" if setting.switch else as_text(setting.default_for(command))
        # WHEN it comes from the environment, or from the config file under either spelling
        from_env = resolve(command, {}, {setting.env: raw})[name]
        config_file = tmp_path / "mk.toml"
        config_file.write_text(f"{name.replace('_', '-')} = {json.dumps(raw)}\n")
        from_file = resolve(command, {"config": str(config_file)}, {})[name]
        # THEN it parses to the same value as the flag would give
        assert from_env == from_file == resolve(command, {name: raw}, {})[name]


def as_text(value: object) -> str:
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return ";".join(",".join(tier) for tier in value)
    return str(value)


def test_a_setting_checked_for_sync_is_checked_for_verify_too() -> None:
    for command, flags in (("sync", FLAGS), ("verify", {"bucket": "my-mirror", "http_url": "http://h/"})):
        with pytest.raises(ConfigError, match="trace path"):
            resolve(command, {**flags, "trace_path": "../outside"}, {})


def test_an_unknown_config_file_key_is_refused(tmp_path: Path) -> None:
    config_file = tmp_path / "mk.toml"
    config_file.write_text("max_delete_procent = 5\n")
    with pytest.raises(ConfigError, match="unknown key 'max_delete_procent'"):
        load_sync_config({**FLAGS, "config": str(config_file)}, {})


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e400", "0"])
def test_numbers_no_duration_or_count_can_be_are_refused(value: str) -> None:
    for name in ("lock_ttl", "upload_concurrency", "rsync_timeout"):
        with pytest.raises(ConfigError, match=f"--{name.replace('_', '-')}="):
            load_sync_config({**FLAGS, name: value}, {})
