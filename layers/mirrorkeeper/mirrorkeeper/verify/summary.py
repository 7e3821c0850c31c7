"""The table a person reads in five seconds after ``verify`` (and at the end of ``demo``)."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from mirrorkeeper.display import human_age, table

MISSING_STATUS = {"http": "404", "ftp": "550", "rsync": "ENOENT"}


def _age(seconds: float | None) -> str:
    return "unknown" if seconds is None else human_age(seconds) + " ago"


def print_verify_summary(state: dict[str, Any], mirror: str, out: IO[str] | None = None) -> None:
    out = out or sys.stdout
    health = state["health"]
    if "Error" in health:
        out.write(f"\n{mirror}: HEALTH NOT PUBLISHED ({health['Error']}: {health['Cause']})\n")
        return
    levels: dict[str, str] = health["levels"]
    now = time.time()
    rows: list[list[object]] = [["protocol", "level", "freshness", "probes passed", "missing file"]]
    probes = state.get("probes", {})
    for endpoint in probes.get("endpoints", []) if "Error" not in probes else []:
        protocol = endpoint["protocol"]
        epoch = endpoint.get("trace_epoch")
        check = endpoint.get("missing_check")
        expected = MISSING_STATUS.get(protocol, "-")
        rows.append(
            [
                protocol,
                levels.get(protocol, "?"),
                _age(now - epoch if epoch is not None else None),
                f"{endpoint['passed']}/{endpoint['passed'] + endpoint['failed']}",
                "-" if check is None else (f"{expected} ok" if check else f"not {expected}"),
            ]
        )
    drift = state.get("drift", {})
    mirror_cell = (
        f"{drift.get('completion_pct', 0):.1f}% complete, drift {drift.get('drift', 0)}, lag {drift.get('lag', 0)}"
        if "Error" not in drift
        else f"drift check failed: {drift['Error']}"
    )
    rows.append(["mirror", levels.get("mirror", "?"), mirror_cell, "", ""])
    out.write(f"\n{mirror}: {health['overall'].upper()}\n\n{table(rows)}\n")
    findings = [f for f in health.get("findings", []) if f["level"] != "ok"]
    if findings:
        out.write("\nfindings:\n" + "".join(f"  {f['component']} ({f['level']}): {f['reason']}\n" for f in findings))
    if health.get("notice"):
        out.write(f"\nalert sent: {health['notice']} (was {health.get('previous_overall', 'ok')})\n")
    out.write(f"\nstatus page: {health['status_page']}\n")
