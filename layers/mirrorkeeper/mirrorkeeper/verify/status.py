"""The status page: ``status.html`` for people and ``status.json`` for tools, rendered from the
stored :class:`~mirrorkeeper.state.HealthState` and published into the served tree.

The page follows mirmon: one row per protocol with its level, the age of the trace file as text
and as a bar, and the last probe results; then the last sync, the content's completeness and a
14-day history (one cell per UTC hour, the worst level seen in it). Choices that keep it readable
wherever it is opened:

- No JavaScript and no external resources; the page declares its own Content-Security-Policy
  (``default-src 'none'``), so even an escaping bug could not run a script or load anything.
- The age bars are inline SVG whose width and colour are SVG *attributes*, not CSS: a stricter CSP
  that a CDN adds in front (``style-src 'self'``) strips inline CSS, but not these, so the bars
  still show. The inline stylesheet only adds layout and the history cells' colours.
- History cells are empty ``<span>`` elements with a ``title`` tooltip rather than SVG with
  ``<title>`` children, because text browsers print SVG titles as text (337 of them); each day row
  also says in words how many checks had which level, which is what lynx and w3m show.
- Every value that comes from data (mirror name, URLs, reasons) is escaped.

``status.json`` carries the field names mirror-status tools know (``last_sync``, ``delay``,
``duration``, ``completion_pct``, per-protocol ``status``), in their units: ``completion_pct`` is
a 0-1 fraction as in Arch Linux's mirror status (the page shows it as a percentage).
"""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mirrorkeeper.display import human_age, human_size, iso, page_head
from mirrorkeeper.names import printable
from mirrorkeeper.state import HealthState, HistoryPoint, Level, ProtocolStatus
from mirrorkeeper.verify.health import DEGRADED_AFTER, DOWN_AFTER, HISTORY_SECONDS, MIRROR, OVERALL

HOUR = 3600
DAY = 86400
# The bar's full width is this many sync intervals, so both thresholds are visible on the track
# (at 1/4 and 3/4) and a bar that reaches the end means "long past down".
BAR_SCALE_INTERVALS = DEGRADED_AFTER + DOWN_AFTER
BAR_WIDTH = 240
BAR_HEIGHT = 14
# One palette for bars, badges and history; the level is always also written out in words.
COLOURS = {"ok": "#2e7d32", "degraded": "#f9a825", "down": "#c62828", "unknown": "#9e9e9e", "none": "#e0e0e0"}
_RANK = {level.label: int(level) for level in Level}
_LINK_SCHEMES = ("http://", "https://", "ftp://")
_MISSING_CODE = {"http": "404", "https": "404", "ftp": "550", "rsync": "ENOENT"}


def known_label(text: str) -> str:
    """A stored level label, or "unknown": a damaged state must still render, and only known
    labels may become CSS classes."""
    return text if text in _RANK else "unknown"


def age_level(age: float, sync_interval: float) -> str:
    """The level a trace of this age gets, by the same rule as health.assess_endpoint."""
    if age > DOWN_AFTER * sync_interval:
        return Level.DOWN.label
    if age > DEGRADED_AFTER * sync_interval:
        return Level.DEGRADED.label
    return Level.OK.label


def bar_width(age: float, sync_interval: float) -> float:
    """Pixels of the age bar: proportional to the age up to BAR_SCALE_INTERVALS, then full."""
    share = max(age, 0.0) / (BAR_SCALE_INTERVALS * sync_interval)
    return round(min(share, 1.0) * BAR_WIDTH, 1)


@dataclass(frozen=True)
class ProtocolView:
    """One protocol row; ``status`` is None for a protocol with a level but no probe record (the
    probe step failed, so the state kept only its level)."""

    name: str
    level: str
    status: ProtocolStatus | None
    age: float | None

    @property
    def missing_code(self) -> str:
        return _MISSING_CODE.get(self.name, "not-found")


def protocol_views(state: HealthState, now: float) -> list[ProtocolView]:
    names = list(state.protocols) + [c for c in state.levels if c not in (OVERALL, MIRROR, *state.protocols)]
    views = []
    for name in names:
        status = state.protocols.get(name)
        level = known_label(state.levels.get(name, status.level if status else "unknown"))
        age = max(now - status.known_current, 0.0) if status and status.known_current is not None else None
        views.append(ProtocolView(name, level, status, age))
    return views


def overall_delay(state: HealthState, now: float) -> float | None:
    """Seconds since the newest trace any protocol served (what clients get), else since the last
    sync ended; None when neither is known."""
    traces = [s.known_current for s in state.protocols.values() if s.known_current is not None]
    if traces:
        return max(now - max(traces), 0.0)
    if state.last_sync is not None:
        return max(now - state.last_sync.finished, 0.0)
    return None


@dataclass
class HourCell:
    start: int
    points: list[HistoryPoint] = field(default_factory=list)

    @property
    def level(self) -> str:
        """The worst overall level of the hour's checks, so one bad check is never hidden; "none"
        for an hour without a check."""
        labels = [known_label(p.overall) for p in self.points]
        if not labels:
            return "none"
        return max(labels, key=lambda label: _RANK.get(label, -1))

    def title(self) -> str:
        stamp = time.strftime("%Y-%m-%d %H:00 UTC", time.gmtime(self.start))
        if not self.points:
            return f"{stamp}: no check"
        return f"{stamp}: {self.level} ({_count_levels(self.points)})"


def history_window(now: float) -> tuple[int, int]:
    """Start of the first and of the last hour cell: every whole UTC hour that overlaps the last
    14 days, the current one included (337 cells)."""
    return int((now - HISTORY_SECONDS) // HOUR) * HOUR, int(now // HOUR) * HOUR


def history_points(history: Iterable[HistoryPoint], now: float) -> list[HistoryPoint]:
    first, _ = history_window(now)
    return sorted((p for p in history if p.t >= first), key=lambda p: p.t)


def history_cells(history: Iterable[HistoryPoint], now: float) -> list[HourCell]:
    first, last = history_window(now)
    cells = {start: HourCell(start) for start in range(first, last + HOUR, HOUR)}
    for point in history_points(history, now):
        # A point stamped after `now` (another host's clock) belongs to the current hour, not nowhere.
        cells[min(int(point.t // HOUR) * HOUR, last)].points.append(point)
    return list(cells.values())


def _count_levels(points: list[HistoryPoint]) -> str:
    counts: dict[str, int] = {}
    for point in points:
        label = known_label(point.overall)
        counts[label] = counts.get(label, 0) + 1
    ordered = sorted(counts.items(), key=lambda item: _RANK.get(item[0], 99))
    noun = "check" if len(points) == 1 else "checks"
    return f"{len(points)} {noun}: " + ", ".join(f"{n} {label}" for label, n in ordered)


# -- status.json ----------------------------------------------------------------------------------


def _fraction(percent: float | None) -> float | None:
    return None if percent is None else round(percent / 100.0, 6)


def _seconds(value: float | None) -> int | None:
    return None if value is None else round(value)


def status_document(state: HealthState, mirror_name: str, sync_interval: float, now: float) -> dict[str, Any]:
    sync = state.last_sync
    protocols: dict[str, Any] = {}
    for view in protocol_views(state, now):
        status = view.status
        protocols[view.name] = {
            "status": view.level,
            "url": status.url if status else None,
            "delay": _seconds(view.age),
            "trace_epoch": status.trace_epoch if status else None,
            "probes_passed": status.passed if status else None,
            "probes_failed": status.failed if status else None,
            "missing_file_check": status.missing_check if status else None,
            "latency_ms": status.latency_ms if status else None,
            "reasons": list(status.reasons) if status else [],
        }
    return {
        "mirror": mirror_name,
        "generated": iso(now),
        "status": known_label(state.levels.get(OVERALL, "ok")),
        "status_since": iso(state.since[OVERALL]) if OVERALL in state.since else None,
        "checked": iso(state.checked_at) if state.checked_at else None,
        "last_sync": iso(sync.finished) if sync else None,
        "last_sync_epoch": round(sync.finished) if sync else None,
        "last_sync_ok": sync.ok if sync else None,
        "last_sync_result": sync.reason if sync else None,
        "delay": _seconds(overall_delay(state, now)),
        "duration": round(sync.duration, 1) if sync else None,
        # Arch Linux's mirror status names this field too, as a fraction: so do we (0-1).
        "completion_pct": _fraction(state.completion),
        "skipped": [{"path": p, "reason": r} for p, r in sync.failed] if sync else [],
        "quarantined": [{"path": p, "reason": r} for p, r in sync.quarantined] if sync else [],
        "held_deletions": sync.held_deletions if sync else 0,
        "upstream_trace": _upstream_json(state.upstream),
        "sync_interval": round(sync_interval),
        "degraded_after": round(DEGRADED_AFTER * sync_interval),
        "down_after": round(DOWN_AFTER * sync_interval),
        "protocols": protocols,
        # The health model's "mirror" component (sync outcome, drift, completeness). Tools read
        # "mirror" as the mirror's name, and JSON cannot hold both, so the component is "content".
        "content": {
            "status": known_label(state.levels.get(MIRROR, "ok")),
            "drift": state.drift,
            "lag": state.lag,
            "reasons": list(state.mirror_reasons),
        },
        "history": [
            {
                "t": round(p.t),
                "status": known_label(p.overall),
                "levels": {name: known_label(label) for name, label in p.levels.items()},
                "freshness": {name: _seconds(age) for name, age in p.freshness.items()},
                "completion_pct": _fraction(p.completion),
            }
            for p in history_points(state.history, now)
        ],
    }


def _upstream_json(upstream: dict[str, Any]) -> dict[str, Any] | None:
    """Upstream's own trace: its path, date and serial, when a sync last saw it (None without one)."""
    if not upstream:
        return None
    if "problem" in upstream:
        return {"path": upstream["path"], "problem": upstream["problem"]}
    return {
        "path": upstream["path"],
        "date": iso(upstream["date"]) if upstream.get("date") else None,
        "serial": upstream.get("serial") or None,
        "seen": iso(upstream["seen"]),
    }


def render_status_json(state: HealthState, mirror_name: str, sync_interval: float, now: float) -> bytes:
    # Compact: 14 days of history at two checks an hour is ~670 points.
    doc = status_document(state, mirror_name, sync_interval, now)
    return (json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


# -- status.html ----------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#212121;margin:1.5em;max-width:80em}
h1{font-size:1.5em;margin:0 0 .3em}h2{font-size:1.15em;margin:1.4em 0 .4em}
table{border-collapse:collapse}th,td{padding:.3em .7em .3em 0;text-align:left;vertical-align:top}
#protocols td,#protocols th,#sync td,#sync th{border-bottom:1px solid #e0e0e0}
.badge{display:inline-block;padding:0 .45em;border-radius:3px;font-weight:600;color:#fff}
.num{font-variant-numeric:tabular-nums;white-space:nowrap}.muted,.url{color:#616161}.url{font-size:.9em}
ul.reasons{margin:0;padding-left:1.1em}svg{vertical-align:middle}td.reasons{min-width:10em;overflow-wrap:anywhere}.url{overflow-wrap:anywhere}
#history th,#history td{padding:1px .7em 1px 0;font-weight:normal}
.cells{white-space:nowrap;line-height:0}
.c,.swatch{display:inline-block;width:10px;height:14px;margin-right:2px;vertical-align:middle}
.c.pad{background:transparent}
"""


def _css() -> str:
    """The stylesheet, with the level colours from COLOURS so page, bars and legend agree."""
    levels = "".join(
        f".badge.{label},.c.{label},.swatch.{label}{{background:{colour}}}" for label, colour in COLOURS.items()
    )
    # Amber is too light for white text.
    return _CSS + levels + ".badge.degraded{color:#212121}\n"


def _e(value: object) -> str:
    # Control characters (a name from upstream in a reason) are shown escaped, never raw.
    return html.escape(printable(str(value)), quote=True)


def _badge(label: str) -> str:
    label = known_label(label)
    return f'<span class="badge {label}">{label}</span>'


def _reasons(reasons: list[str]) -> str:
    if not reasons:
        return '<span class="muted">none</span>'
    return '<ul class="reasons">' + "".join(f"<li>{_e(r)}</li>" for r in reasons) + "</ul>"


def _ago(epoch: float, now: float) -> str:
    return f"{iso(epoch)} ({human_age(now - epoch)} ago)"


def age_bar(age: float | None, sync_interval: float) -> str:
    """The mirmon bar as inline SVG: a track with ticks at the degraded and down thresholds, and a
    bar as long as the trace is old, coloured by the level that age gets."""
    ticks = "".join(
        f'<rect x="{math.floor(BAR_WIDTH * factor / BAR_SCALE_INTERVALS)}" width="1" height="{BAR_HEIGHT}" '
        'fill="#9e9e9e"/>'
        for factor in (DEGRADED_AFTER, DOWN_AFTER)
    )
    if age is None:
        label, bar = "no trace file read", ""
    else:
        level = age_level(age, sync_interval)
        label = f"trace age {human_age(age)}, {level}"
        # Drawn after the ticks so it covers them: the ticks show only on the empty part.
        bar = (
            f'<rect class="age" data-level="{level}" width="{bar_width(age, sync_interval)}" '
            f'height="{BAR_HEIGHT}" fill="{COLOURS[level]}"/>'
        )
    return (
        f'<svg class="agebar" width="{BAR_WIDTH}" height="{BAR_HEIGHT}" viewBox="0 0 {BAR_WIDTH} {BAR_HEIGHT}" '
        f'role="img" aria-label="{_e(label)}"><rect width="{BAR_WIDTH}" height="{BAR_HEIGHT}" fill="#eeeeee"/>'
        f"{ticks}{bar}</svg>"
    )


def _protocol_row(view: ProtocolView, sync_interval: float) -> str:
    status = view.status
    name = _e(view.name)
    if status is None:
        header = name
        probes = missing = latency = '<span class="muted">not probed</span>'
        reasons = _reasons([])
    else:
        # Only schemes a browser opens become links: a URL is data and must not become javascript:.
        url = _e(status.url)
        link = f'<a href="{url}">{url}</a>' if status.url.startswith(_LINK_SCHEMES) else url
        header = f'{name}<br><span class="url">{link}</span>'
        probes = f"{status.passed} passed, {status.failed} failed"
        code = view.missing_code
        missing = {
            True: f"{code} as expected",
            False: f"wrong answer (expected {code})",
            None: '<span class="muted">not checked</span>',
        }[status.missing_check]
        latency = f"{status.latency_ms:.0f} ms" if status.latency_ms is not None else '<span class="muted">-</span>'
        reasons = _reasons(status.reasons)
    age_text = human_age(view.age) if view.age is not None else '<span class="muted">no trace</span>'
    return (
        f'<tr class="protocol" data-protocol="{name}" data-level="{view.level}">'
        f'<th scope="row">{header}</th><td class="level">{_badge(view.level)}</td>'
        f'<td class="num age">{age_text}</td><td class="bar">{age_bar(view.age, sync_interval)}</td>'
        f'<td class="num probes">{probes}</td><td class="missing">{missing}</td>'
        f'<td class="num latency">{latency}</td><td class="reasons">{reasons}</td></tr>'
    )


def _sync_rows(state: HealthState, now: float) -> str:
    rows: list[tuple[str, str]] = [("Content", _badge(state.levels.get(MIRROR, "ok")))]
    sync = state.last_sync
    if sync is None:
        rows.append(("Last sync", '<span class="muted">no sync recorded yet</span>'))
    else:
        if sync.ok:
            result = f"ok: {_e(sync.reason)}"
        else:
            # Reasons from sync_from_exit already name the exit code; say it only when they don't.
            code = f"exit {sync.exit_code}"
            code = f" ({code})" if sync.exit_code is not None and code not in sync.reason else ""
            verdict = _VERDICTS.get(sync.exit_code or 1, "failed")
            result = f"<strong>{verdict}{code}</strong>: {_e(sync.reason)}"
        rows += [
            ("Last sync", f'<span class="num">{_ago(sync.finished, now)}</span>, took {human_age(sync.duration)}'),
            ("Result", result),
            ("Changed", f"{sync.files_changed} files, {human_size(sync.uploaded_bytes)} uploaded"),
        ]
        if sync.failed:
            rows.append(("Skipped", _path_list(sync.failed, "not fetched or stored in the last sync")))
        if sync.quarantined:
            rows.append(("Quarantined", _path_list(sync.quarantined, "failing run after run; retried daily")))
        if sync.held_deletions:
            held = [(path, "") for path in sync.held_examples]
            rows.append(("Held deletions", _path_list(held, f"{sync.held_deletions} deletions held by the guard")))
    if state.upstream:
        rows.append(("Upstream's trace", _upstream_cell(state.upstream, now)))
    completion = f"{state.completion:.3f}".rstrip("0").rstrip(".") + " %" if state.completion is not None else None
    unknown = '<span class="muted">not measured</span>'
    rows += [
        ("Completion", f'<span id="completion" class="num">{completion}</span>' if completion else unknown),
        ("Drift", f"{state.drift} objects differ from the manifest" if state.drift is not None else unknown),
        ("Lag", f"{state.lag} upstream entries not yet published" if state.lag is not None else unknown),
        ("Reasons", _reasons(state.mirror_reasons)),
    ]
    return "".join(f'<tr><th scope="row">{head}</th><td>{cell}</td></tr>' for head, cell in rows)


_VERDICTS = {4: "deletions held", 5: "partial", 6: "upstream busy"}


def _upstream_cell(upstream: dict[str, Any], now: float) -> str:
    """Upstream's own date and serial beside ours: an upstream that has not changed for days is not a
    mirror days stale."""
    path = f"<code>{_e(upstream['path'])}</code>"
    if "problem" in upstream:
        return f'{path}: <span class="muted">unusable: {_e(upstream["problem"])}</span>'
    date = f"written {_ago(upstream['date'], now)}" if upstream.get("date") else "no date in it"
    serial = f", serial <code>{_e(upstream['serial'])}</code>" if upstream.get("serial") else ""
    return f"{path}: {date}{serial}; last seen by a sync {_ago(upstream['seen'], now)}"


def _path_list(paths: tuple[tuple[str, str], ...] | list[tuple[str, str]], caption: str) -> str:
    items = "".join(f"<li><code>{_e(path)}</code>{': ' + _e(reason) if reason else ''}</li>" for path, reason in paths)
    return f'<span class="muted">{_e(caption)}</span><ul class="paths">{items}</ul>'


def _history_rows(state: HealthState, now: float) -> str:
    """One row per UTC day, newest first, 24 hour cells each; hours outside the window are blank."""
    cells = {cell.start: cell for cell in history_cells(state.history, now)}
    first, last = min(cells), max(cells)
    rows = []
    for day in range(last - last % DAY, first - first % DAY - 1, -DAY):
        spans, points = [], []
        for start in range(day, day + DAY, HOUR):
            cell = cells.get(start)
            if cell is None:
                spans.append('<span class="c pad"></span>')
                continue
            points += cell.points
            spans.append(f'<span class="c {cell.level}" title="{_e(cell.title())}"></span>')
        summary = _count_levels(points) if points else "no checks"
        rows.append(
            f'<tr><th scope="row" class="num">{time.strftime("%Y-%m-%d", time.gmtime(day))}</th>'
            f'<td class="cells">{"".join(spans)}</td><td class="muted">{_e(summary)}</td></tr>'
        )
    return "".join(rows)


def render_status_html(state: HealthState, mirror_name: str, sync_interval: float, now: float) -> bytes:
    overall = known_label(state.levels.get(OVERALL, "ok"))
    name = _e(mirror_name)
    checked = _ago(state.checked_at, now) if state.checked_at else "never"
    since = f"; {overall} since {iso(state.since[OVERALL])}" if OVERALL in state.since else ""
    rules = (
        f"synced every {human_age(sync_interval)}; a protocol is degraded when its trace file is older than "
        f"{human_age(DEGRADED_AFTER * sync_interval)} and down beyond {human_age(DOWN_AFTER * sync_interval)}"
    )
    rows = "".join(_protocol_row(view, sync_interval) for view in protocol_views(state, now))
    legend = " ".join(f'<span class="swatch {label}"></span> {label}' for label in ("ok", "degraded", "down"))
    page = (
        page_head(f"{name}: {overall} - mirror status", _css())
        + f"""<body>
<h1>Mirror status: <span id="mirror-name">{name}</span> <span id="overall">{_badge(overall)}</span></h1>
<p class="muted">Checked {checked}{since}. Page generated {iso(now)}. The mirror is {rules}.
For tools: <a href="status.json">status.json</a>.</p>
<h2>Protocols</h2>
<table id="protocols">
<thead><tr><th>Protocol</th><th>Level</th><th>Trace age</th>
<th>Age bar (full width: {human_age(BAR_SCALE_INTERVALS * sync_interval)})</th><th>Probes</th>
<th>Missing file</th><th>Latency</th><th>Reasons</th></tr></thead>
<tbody>
{rows or '<tr><td colspan="8" class="muted">no protocol checked yet</td></tr>'}
</tbody>
</table>
<h2>Sync and content</h2>
<table id="sync"><tbody>
{_sync_rows(state, now)}
</tbody></table>
<h2>Last 14 days</h2>
<p class="muted">One cell per hour (UTC), coloured by the worst overall level checked in it; hover a cell for
its time and checks. {legend} <span class="swatch none"></span> no check</p>
<table id="history"><tbody>
{_history_rows(state, now)}
</tbody></table>
</body>
</html>
"""
    )
    return page.encode()
