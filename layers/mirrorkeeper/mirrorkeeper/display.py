"""How sizes, ages, times and tables are shown to people: in pages, alerts, summaries and logs."""

import time
from collections.abc import Sequence


def human_size(size: int, compact: bool = False) -> str:
    """1536 → '1.5 KiB', or '1.5K' in the compact form Apache's autoindex pages use."""
    value = float(size)
    for unit in ("", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            if not unit:
                return f"{value:.0f}" if compact else f"{value:.0f} B"
            return f"{value:.1f}{unit}" if compact else f"{value:.1f} {unit}iB"
        value /= 1024
    raise AssertionError("unreachable")


def human_age(seconds: float) -> str:
    """An age as people say it, in alerts, the status page and summaries."""
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def iso(epoch: float) -> str:
    """UTC, to the second: ``2026-11-29T16:56:49Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def table(rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns two spaces apart; the first row is the header."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


# Our pages run no script and load nothing from elsewhere: an inline stylesheet is all they may use.
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def page_head(title: str, style: str) -> str:
    """An HTML page of ours up to its <body>: ``title`` already escaped, ``style`` the inline CSS."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{PAGE_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
"""
