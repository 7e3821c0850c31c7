"""The table a person reads in five seconds after ``verify``; ``demo``'s host table has the same cells."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from mirrorkeeper.display import human_age, table

MISSING_STATUS = {"http": "404", "ftp": "550", "rsync": "ENOENT"}


def _age(seconds: float | None) -> str:
    return "unknown" if seconds is None else human_age(seconds) + " ago"


ENDPOINT_COLUMNS = ("level", "freshness", "probes passed", "missing file")


def probed_endpoints(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The endpoints a mirror's verify state probed ([] when its probe step failed)."""
    probes = state.get("probes", {})
    return [] if "Error" in probes else list(probes.get("endpoints", []))


def endpoint_cells(endpoint: dict[str, Any], levels: dict[str, str], now: float) -> list[object]:
    """One probed endpoint under ENDPOINT_COLUMNS: its protocol's level, the served trace's age, the
    probes passed, and whether a missing path got the protocol's not-found answer."""
    epoch = endpoint.get("trace_epoch")
    check = endpoint.get("missing_check")
    expected = MISSING_STATUS.get(endpoint["protocol"], "-")
    return [
        levels.get(endpoint["protocol"], "?"),
        _age(now - epoch if epoch is not None else None),
        f"{endpoint['passed']}/{endpoint['passed'] + endpoint['failed']}",
        "-" if check is None else (f"{expected} ok" if check else f"not {expected}"),
    ]


def print_verify_summary(state: dict[str, Any], mirror: str, out: IO[str] | None = None) -> None:
    out = out or sys.stdout
    health = state["health"]
    if "Error" in health:
        out.write(f"\n{mirror}: HEALTH NOT PUBLISHED ({health['Error']}: {health['Cause']})\n")
        return
    levels: dict[str, str] = health["levels"]
    now = time.time()
    rows: list[list[object]] = [["protocol", *ENDPOINT_COLUMNS]]
    rows += [[endpoint["protocol"], *endpoint_cells(endpoint, levels, now)] for endpoint in probed_endpoints(state)]
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
