"""`make deploy`: a host's mirrors.toml becomes the stack's parameters, `sam deploy` runs with them, and
the file goes where the deployed tasks and functions read it (MIRRORKEEPER_CONFIG,
s3://BUCKET/state/.host/mirrors.toml).

    python -m mirrorkeeper_dev.deploy [--mirrors FILE] --check            what the file gives the stack
    python -m mirrorkeeper_dev.deploy [--mirrors FILE] -- sam deploy ...   deploy, then upload the file

Without --mirrors the stack is a host of one, which its parameters configure, as before hosts.

What the file gives the stack (template.yaml says how it uses them):

    MirrorSchedules    one item per enabled mirror, NAME|STATE|EXPRESSION, the collection of the
                       template's loop of schedules (STATE is DISABLED for a paused mirror); "-" for a
                       host of one
    SyncIntervalHours  the longest interval of the host's mirrors, in the hours the template allows:
                       the freshness alarms fire at twice it

`sam deploy` drops the parameter overrides saved in samconfig.toml when its command line gives any, so
the saved ones are passed first and these after them (of two values for a parameter, the later wins).
The file is uploaded once the stack has these schedules, and only then: after a declined change set or
a failed deploy the host keeps running with the file it had.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirrorkeeper.config import MIRRORS, SYNC, ConfigFile, resolve
from mirrorkeeper.errors import ConfigError, MirrorkeeperError
from mirrorkeeper.host import Schedule
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.s3errors import aws_errors, s3_errors
from mirrorkeeper.state import host_config_key

HOST_OF_ONE = "-"
# SyncIntervalHours' allowed values in template.yaml: the hours that divide a day, as a schedule's do.
INTERVAL_HOURS = (1, 2, 3, 4, 6, 8, 12, 24)
PARAMETER_VALUE_BYTES = 4096  # the most CloudFormation takes in one parameter value
SECRETS_MANAGER = "secretsmanager:"


@dataclass(frozen=True)
class MirrorSchedule:
    name: str
    schedule: Schedule
    paused: bool

    @property
    def item(self) -> str:
        """Its item of MirrorSchedules. The schedule's logical id is the item's letters and digits: the
        name's lower case, then the state's upper case, so two mirrors never share one (names that
        differ only by hyphens are refused by the config file's checks)."""
        return f"{self.name}|{'DISABLED' if self.paused else 'ENABLED'}|{self.schedule.expression}"


@dataclass(frozen=True)
class Host:
    """What a host's mirrors.toml gives the stack."""

    path: str
    schedules: tuple[MirrorSchedule, ...]  # the enabled mirrors, paused ones included
    disabled: tuple[str, ...]  # no schedule at all


def read_host(path: str, stack_name: str) -> Host:
    """The host's mirrors as the stack schedules them. The package checks the whole file (a bad key or
    value is a ConfigError naming the mirror); the stack adds its own rules: each enabled mirror gets a
    schedule, and an rsync password must be a secret the sync task may read."""
    file = ConfigFile.read(path)
    if not file.mirrors:
        raise ConfigError(
            f"{path} has no [mirrors.NAME] table; a host of one deploys without a mirrors.toml (leave MIRRORS unset)"
        )
    scheduled, disabled = [], []
    for name in file.mirrors:
        # The file alone, as the deployed host reads it: none of this shell's MIRRORKEEPER_* variables.
        values = resolve(MIRRORS, {}, {}, mirror=name, file=file)
        check_password(path, name, resolve(SYNC, {}, {}, mirror=name, file=file)["rsync_password"], stack_name)
        if not values["enabled"]:
            disabled.append(name)
            continue
        try:
            schedule = Schedule(values["sync_interval"], values["minute"])
        except ConfigError as exc:
            raise ConfigError(f"{path} [mirrors.{name}]: {exc}") from None
        scheduled.append(MirrorSchedule(name, schedule, values["paused"]))
    if not scheduled:
        raise ConfigError(
            f"{path}: every mirror is disabled, and a host's stack needs one schedule at least; pause them "
            "instead (paused = true keeps a mirror's schedule, switched off)"
        )
    return Host(path, tuple(scheduled), tuple(disabled))


def check_password(path: str, mirror: str, reference: str, stack_name: str) -> None:
    """The deployed sync task reads an rsync password from Secrets Manager alone, and only the secrets
    named after its stack (<stack>/...): its role grants nothing else (template.yaml, SyncTaskRole)."""
    if not reference:
        return
    where = f"{path} [mirrors.{mirror}] rsync_password"
    if not stack_name:
        raise ConfigError(f"{where}: samconfig.toml names no stack (stack_name), whose name a host's secrets take")
    secret_name = f"{stack_name}/{mirror}"
    wanted = (
        f'store the password as the secret {secret_name}, then write rsync_password = "{SECRETS_MANAGER}{secret_name}"'
    )
    if not reference.startswith(SECRETS_MANAGER):
        kind = reference.split(":", 1)[0]
        raise ConfigError(f"{where} is read from {kind}:, which the deployed sync task does not have: {wanted}")
    secret = reference.removeprefix(SECRETS_MANAGER).split(":secret:", 1)[-1]  # an ARN's name part, or the name
    if not secret.startswith(stack_name + "/"):
        raise ConfigError(
            f"{where} names the secret {secret!r}, and the stack's sync task may read only the secrets named "
            f"{stack_name}/...: {wanted}"
        )


def stack_parameters(host: Host | None) -> dict[str, str]:
    """The parameter overrides the host gives its stack (a host of one: None)."""
    if host is None:
        return {"MirrorSchedules": HOST_OF_ONE}
    schedules = ",".join(s.item for s in host.schedules)
    if len(schedules.encode()) > PARAMETER_VALUE_BYTES:
        raise ConfigError(
            f"{host.path}: the schedules of its {len(host.schedules)} mirrors take {len(schedules.encode())} bytes, "
            f"and CloudFormation takes {PARAMETER_VALUE_BYTES} in one parameter: shorten the mirrors' names"
        )
    longest = max(s.schedule.interval for s in host.schedules)
    hours = next(h for h in INTERVAL_HOURS if h * 3600 >= longest)
    return {"MirrorSchedules": schedules, "SyncIntervalHours": str(hours)}


@dataclass(frozen=True)
class SamConfig:
    """What `sam deploy` reads of samconfig.toml's default environment: the deploy command's values
    over the global ones."""

    stack_name: str = ""
    region: str | None = None
    profile: str | None = None
    parameter_overrides: tuple[str, ...] = ()  # as saved: one string of KEY=VALUE pairs, or a list of them

    @classmethod
    def read(cls, path: Path) -> SamConfig:
        if not path.exists():
            return cls()
        try:
            sections = tomllib.loads(path.read_text()).get("default", {})
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        values: dict[str, Any] = {
            **sections.get("global", {}).get("parameters", {}),
            **sections.get("deploy", {}).get("parameters", {}),
        }
        saved = values.get("parameter_overrides", ())
        return cls(
            values.get("stack_name", ""),
            values.get("region"),
            values.get("profile"),
            (saved,) if isinstance(saved, str) else tuple(saved),
        )


def deploy_command(sam: list[str], saved: tuple[str, ...], parameters: dict[str, str]) -> list[str]:
    """`sam deploy` with the overrides samconfig.toml saved, then these (SAM CLI's KEY="VALUE" form)."""
    return [*sam, "--parameter-overrides", *saved, *(f'{name}="{value}"' for name, value in parameters.items())]


def publish_config(host: Host, config: SamConfig, parameters: dict[str, str]) -> str:
    """Upload the file to the stack's bucket once the stack has its schedules; its s3:// URL."""
    import boto3

    session = boto3.Session(profile_name=config.profile, region_name=config.region)
    with aws_errors("CloudFormation", f"describe the stack {config.stack_name}"):
        (stack,) = session.client("cloudformation").describe_stacks(StackName=config.stack_name)["Stacks"]
    deployed = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    if _items(deployed.get("MirrorSchedules", "")) != _items(parameters["MirrorSchedules"]):
        raise MirrorkeeperError(
            f"the stack {config.stack_name} does not have the schedules of {host.path} (was the change set declined, "
            "or did the deploy fail?): the file was not uploaded, and the host runs with the one it had; run "
            "make deploy again"
        )
    outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in stack.get("Outputs", [])}
    bucket = outputs["BucketName"]
    key = host_config_key(MirrorLayout.create(bucket))
    with s3_errors(f"upload {host.path} to s3://{bucket}/{key}"):
        session.client("s3").put_object(
            Bucket=bucket, Key=key, Body=Path(host.path).read_bytes(), ContentType="application/toml"
        )
    return f"s3://{bucket}/{key}"


def _items(value: str) -> list[str]:
    """A CommaDelimitedList's items, however CloudFormation spaced its commas."""
    return [item.strip() for item in value.split(",")]


def summary(host: Host | None, parameters: dict[str, str]) -> str:
    if host is None:
        lines = ["no mirrors.toml: a host of one, which the stack's parameters configure"]
    else:
        paused = sum(s.paused for s in host.schedules)
        lines = [
            f"{host.path}: {len(host.schedules)} mirrors scheduled ({paused} paused)"
            + (f", {len(host.disabled)} disabled: {', '.join(host.disabled)}" if host.disabled else "")
        ]
    return "\n".join([*lines, *(f"  {name}={value}" for name, value in parameters.items())])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mirrorkeeper_dev.deploy",
        description="Deploy the stack for a host's mirrors.toml (or a host of one), then upload the file.",
    )
    parser.add_argument("--mirrors", metavar="FILE", help="the host's mirrors.toml (without it: a host of one)")
    parser.add_argument(
        "--samconfig", type=Path, default=Path("samconfig.toml"), help="SAM CLI's saved answers (samconfig.toml)"
    )
    parser.add_argument("--check", action="store_true", help="print the parameters the file gives the stack and stop")
    parser.add_argument("sam", nargs=argparse.REMAINDER, help="-- then the sam deploy command to run")
    args = parser.parse_args(argv)
    sam = args.sam[1:] if args.sam[:1] == ["--"] else args.sam
    if not args.check and not sam:
        parser.error("give --check, or -- and the sam deploy command")
    try:
        host = read_host(args.mirrors, SamConfig.read(args.samconfig).stack_name) if args.mirrors else None
        parameters = stack_parameters(host)
        print(summary(host, parameters), flush=True)
        if args.check:
            return 0
        saved = SamConfig.read(args.samconfig).parameter_overrides
        deployed = subprocess.run(deploy_command(sam, saved, parameters), check=False)
        if deployed.returncode or host is None:
            return deployed.returncode
        # Read again: a guided deploy has just saved the stack's name and region.
        print(f"{host.path} uploaded to {publish_config(host, SamConfig.read(args.samconfig), parameters)}")
        return 0
    except MirrorkeeperError as exc:
        print(f"make deploy: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)


if __name__ == "__main__":
    sys.exit(main())
