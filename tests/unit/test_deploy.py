"""`make deploy`'s reading of a host's mirrors.toml: the parameters it gives the stack, the rules the
stack adds to the package's own checks, and how the saved answers of samconfig.toml go along.
(The template's use of the parameters: tests/template/test_host.py; the whole command against a
stack in the moto server: tests/functional/test_deploy.py.)"""

from pathlib import Path

import pytest

from mirrorkeeper.errors import ConfigError
from mirrorkeeper_dev.deploy import (
    PARAMETER_VALUE_BYTES,
    SamConfig,
    deploy_command,
    main,
    read_host,
    stack_parameters,
)

# The contract's shape (tests/unit/test_host_config.py), with the password where the stack reads it.
HOST = """
[host]
name = "mirrors.example.org"
bucket = "my-mirror-bucket"
max_delete_percent = 20

[mirrors.openvz]
upstream = "rsync://download.openvz.org/openvz-download/"
interval = "1h"
minute = 7

[mirrors.debian-security]
upstream = "rsync://security.debian.org/debian-security/"
path = "linux/debian-security"
interval = "6h"
minute = 25
rsync_user = "mirror"
rsync_password = "secretsmanager:mirrorkeeper/debian-security"

[mirrors.epel]
upstream = "rsync://dl.fedoraproject.org/fedora-epel/"
interval = "15m"
minute = 3
paused = true

[mirrors.retired]
upstream = "rsync://old.example.org/retired/"
enabled = false
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mirrors.toml"
    path.write_text(text)
    return str(path)


def test_each_enabled_mirror_is_one_schedule_a_paused_one_switched_off(tmp_path: Path) -> None:
    host = read_host(write(tmp_path, HOST), "mirrorkeeper")
    assert host.disabled == ("retired",)
    assert stack_parameters(host) == {
        "MirrorSchedules": (
            "openvz|ENABLED|cron(7 */1 * * ? *),"
            "debian-security|ENABLED|cron(25 */6 * * ? *),"
            "epel|DISABLED|cron(3/15 * * * ? *)"
        ),
        # the freshness alarms fire at twice the longest interval
        "SyncIntervalHours": "6",
    }


def test_a_host_of_one_keeps_its_one_schedule() -> None:
    assert stack_parameters(None) == {"MirrorSchedules": "-"}


@pytest.mark.parametrize(
    ("intervals", "hours"), [(["15m"], "1"), (["1h", "30m"], "1"), (["2h", "3h"], "3"), (["8h", "1d"], "24")]
)
def test_the_alarm_interval_is_the_longest_of_the_mirrors(tmp_path: Path, intervals: list[str], hours: str) -> None:
    text = "".join(
        f'[mirrors.m{i}]\nupstream = "rsync://h/m{i}/"\ninterval = "{interval}"\nminute = 0\n'
        for i, interval in enumerate(intervals)
    )
    assert stack_parameters(read_host(write(tmp_path, text), "mk"))["SyncIntervalHours"] == hours


def test_the_file_alone_decides_not_this_shells_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN settings in the environment of the shell that runs make deploy
    monkeypatch.setenv("MIRRORKEEPER_SYNC_INTERVAL", "24h")
    monkeypatch.setenv("MIRRORKEEPER_PAUSED", "true")
    # THEN the stack gets what the file says, as the deployed host reads it
    assert stack_parameters(read_host(write(tmp_path, HOST), "mirrorkeeper"))["SyncIntervalHours"] == "6"
    assert "openvz|ENABLED" in stack_parameters(read_host(write(tmp_path, HOST), "mirrorkeeper"))["MirrorSchedules"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[host]\nname = "x"\n', r"no \[mirrors.NAME\] table"),
        ('[mirrors.a]\nupstream = "rsync://h/a/"\nenabled = false\n', "every mirror is disabled.*paused = true"),
        ('[mirrors.a]\nupstream = "rsync://h/a/"\ninterval = "5h"\n', r"\[mirrors.a\]: a sync interval of 18000 s"),
        ('[mirrors.a]\nupstream = "rsync://h/a/"\ncolour = "red"\n', r"\[mirrors.a\] unknown key 'colour'"),
    ],
)
def test_a_file_the_stack_cannot_run_is_refused_before_anything_deploys(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        read_host(write(tmp_path, text), "mk")


@pytest.mark.parametrize(
    "reference",
    [
        "secretsmanager:mk/a",
        "secretsmanager:arn:aws:secretsmanager:eu-west-1:123456789012:secret:mk/rsync/a-AbCdEf",
    ],
)
def test_rsync_passwords_are_the_stacks_secrets(tmp_path: Path, reference: str) -> None:
    text = f'[host]\nrsync_password = "{reference}"\n[mirrors.a]\nupstream = "rsync://h/a/"\n'
    assert read_host(write(tmp_path, text), "mk").schedules[0].name == "a"


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("secretsmanager:other/a", "names the secret 'other/a'.*only the secrets named mk/"),
        ("secretsmanager:mkother", "names the secret 'mkother'"),
        ("env:A_PASSWORD", "is read from env:, which the deployed sync task does not have"),
        ("file:/etc/rsync.secret", "is read from file:"),
    ],
)
def test_a_password_the_sync_task_cannot_read_is_refused(tmp_path: Path, reference: str, message: str) -> None:
    text = f'[mirrors.a]\nupstream = "rsync://h/a/"\nrsync_password = "{reference}"\n'
    with pytest.raises(ConfigError, match=message) as raised:
        read_host(write(tmp_path, text), "mk")
    assert 'rsync_password = "secretsmanager:mk/a"' in str(raised.value)  # what to write instead


def test_the_schedules_must_fit_one_parameter_value(tmp_path: Path) -> None:
    names = [f"{i:02d}" + "x" * 60 for i in range(50)]
    text = "".join(f'[mirrors.{name}]\nupstream = "rsync://h/m/"\npath = "p{i}"\n' for i, name in enumerate(names))
    with pytest.raises(ConfigError, match=f"CloudFormation takes {PARAMETER_VALUE_BYTES}.*shorten"):
        stack_parameters(read_host(write(tmp_path, text), "mk"))


def test_saved_answers_go_first_and_the_files_parameters_after_them(tmp_path: Path) -> None:
    samconfig = tmp_path / "samconfig.toml"
    samconfig.write_text(
        '[default.global.parameters]\nstack_name = "global-name"\nregion = "us-east-1"\n'
        '[default.deploy.parameters]\nstack_name = "host"\nregion = "eu-west-1"\n'
        'parameter_overrides = "AlertEmail=\\"a@example.org\\" MirrorSchedules=\\"-\\""\n'
    )
    config = SamConfig.read(samconfig)
    assert (config.stack_name, config.region, config.profile) == ("host", "eu-west-1", None)
    parameters = {"MirrorSchedules": "a|ENABLED|cron(7 */1 * * ? *)", "SyncIntervalHours": "1"}
    assert deploy_command(["sam", "deploy"], config.parameter_overrides, parameters) == [
        "sam",
        "deploy",
        "--parameter-overrides",
        'AlertEmail="a@example.org" MirrorSchedules="-"',
        'MirrorSchedules="a|ENABLED|cron(7 */1 * * ? *)"',
        'SyncIntervalHours="1"',
    ]
    # saved as a list, and no file at all
    samconfig.write_text('[default.deploy.parameters]\nparameter_overrides = ["A=1", "B=2"]\n')
    assert SamConfig.read(samconfig).parameter_overrides == ("A=1", "B=2")
    assert SamConfig.read(tmp_path / "none.toml") == SamConfig()


def test_check_prints_the_parameters_and_a_bad_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samconfig = tmp_path / "samconfig.toml"
    samconfig.write_text('[default.global.parameters]\nstack_name = "mirrorkeeper"\n')
    assert main(["--mirrors", write(tmp_path, HOST), "--samconfig", str(samconfig), "--check"]) == 0
    out = capsys.readouterr().out
    assert "3 mirrors scheduled (1 paused), 1 disabled: retired" in out and "SyncIntervalHours=6" in out
    assert main(["--mirrors", str(tmp_path / "missing.toml"), "--samconfig", str(samconfig), "--check"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("make deploy: error: config file") and "does not exist" in line
