"""The host's front page (``/``): an index of its mirrors, and ``/.mirrorkeeper/mirrors.json`` for tools.

One row per mirror: its name linking to its path, upstream, last successful sync, state, size,
each protocol's health, and its status page. No JavaScript, no external resources (the same
policy as the status page); every value from data is escaped. The page also carries the
directory entries as JSON, as every index page does, so the FTP front end lists ``/`` with
real times; a mirror whose path has several segments gets a page for each directory above it.
"""

from __future__ import annotations

import html
import json
from urllib.parse import quote

from mirrorkeeper import __version__
from mirrorkeeper.content import index_data
from mirrorkeeper.display import human_size, iso, page_head
from mirrorkeeper.entries import ancestors
from mirrorkeeper.host import MirrorSummary
from mirrorkeeper.names import printable
from mirrorkeeper.state import STATUS_HTML_PATH

MIRRORS_JSON_PATH = ".mirrorkeeper/mirrors.json"
_STYLE = (
    "body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;max-width:80em}table{border-collapse:collapse}"
    "th,td{padding:.3em .8em .3em 0;text-align:left;border-bottom:1px solid #e0e0e0;vertical-align:top}"
    ".s{text-align:right}.muted{color:#616161}.b{display:inline-block;padding:0 .45em;border-radius:3px;"
    "font-weight:600;color:#fff}.success,.ok{background:#2e7d32}.failed,.down{background:#c62828}"
    ".degraded,.syncing{background:#f9a825;color:#212121}.paused,.disabled,.unknown{background:#9e9e9e}"
)
_BADGES = {"success", "failed", "syncing", "paused", "disabled", "ok", "degraded", "down"}


def _e(value: object) -> str:
    return html.escape(printable(str(value)), quote=True)


def _badge(label: str) -> str:
    known = label if label in _BADGES else "unknown"
    return f'<span class="b {known}">{_e(label)}</span>'


def _href(path: str) -> str:
    return "/" + "/".join(quote(part, safe="") for part in path.split("/")) + "/"


def render_front_page(host_name: str, mirrors: list[MirrorSummary], now: float) -> bytes:
    protocols = sorted({p for m in mirrors for p in m.health if p not in ("overall", "mirror")})
    heads = "".join(f"<th>{_e(p)}</th>" for p in protocols)
    rows = []
    for m in sorted(mirrors, key=lambda m: m.name):
        health = "".join(f"<td>{_badge(m.health.get(p, 'unknown'))}</td>" for p in protocols)
        last = f'<span class="num">{iso(m.last_update)}</span>' if m.last_update else '<span class="muted">never</span>'
        size = human_size(m.size) if m.size is not None else '<span class="muted">unknown</span>'
        # A mirror that never published has no tree to link to (its status page comes with its first verify).
        name = f'<a href="{_e(_href(m.path))}">{_e(m.name)}</a>' if m.last_update else _e(m.name)
        status = f'<a href="{_e(_href(m.path) + STATUS_HTML_PATH)}">status</a>' if m.health else ""
        rows.append(
            f'<tr data-mirror="{_e(m.name)}"><th scope="row">{name}</th>'
            f'<td><code>{_e("/" + m.path + "/")}</code></td><td class="muted">{_e(m.upstream)}</td>'
            f'<td>{last}</td><td>{_badge(m.status)}</td><td class="s">{size}</td>{health}<td>{status}</td></tr>'
        )
    title = _e(host_name)
    body = "\n".join(rows) or '<tr><td colspan="7" class="muted">no mirror configured</td></tr>'
    page = (
        page_head(f"{title}: mirrors", _STYLE)
        + f"""<body>
<h1>{title}</h1>
<p class="muted">{len(mirrors)} mirrors. Page generated {iso(now)}. For tools:
<a href="{MIRRORS_JSON_PATH}">mirrors.json</a> (tunasync's fields).</p>
<table id="mirrors">
<thead><tr><th>Mirror</th><th>Path</th><th>Upstream</th><th>Last successful sync (UTC)</th><th>State</th>
<th class="s">Size</th>{heads}<th></th></tr></thead>
<tbody>
{body}
</tbody>
</table>
{index_data(_entries("", mirrors))}
<address>{title} &middot; mirrorkeeper {__version__}</address>
</body>
</html>
"""
    )
    return page.encode()


def render_mirrors_json(mirrors: list[MirrorSummary]) -> bytes:
    return (json.dumps([m.to_json() for m in sorted(mirrors, key=lambda m: m.name)], indent=1) + "\n").encode()


def directory_pages(host_name: str, mirrors: list[MirrorSummary], now: float) -> dict[str, bytes]:
    """Pages for the directories above mirrors whose path has several segments (``linux/`` above
    ``linux/debian``), by directory path: each lists the mirrors and directories below it."""
    above = {parent for m in mirrors if m.last_update for parent in ancestors(m.path) if parent}
    pages = {}
    for directory in sorted(above):
        below = [m for m in mirrors if m.path.startswith(directory + "/") and m.last_update]
        children = sorted({m.path[len(directory) + 1 :].split("/")[0] for m in below})
        links = "".join(f'<li><a href="{_e(_href(directory + "/" + c))}">{_e(c)}/</a></li>' for c in children)
        pages[directory] = (
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(host_name)}: /{_e(directory)}/'
            f'</title></head><body><h1>/{_e(directory)}/</h1><p><a href="/">All mirrors</a></p><ul>{links}</ul>'
            f"{index_data(_entries(directory, below))}</body></html>\n"
        ).encode()
    return pages


def _entries(directory: str, mirrors: list[MirrorSummary]) -> list[dict[str, object]]:
    """The directory entries under ``directory``: the published mirrors' directories, or those above
    them, each dated by the newest sync below it (a listing shows no directory that is not there)."""
    newest: dict[str, float] = {}
    for m in mirrors:
        if m.last_update is None:
            continue
        rest = m.path[len(directory) + 1 :] if directory else m.path
        name = rest.split("/")[0]
        newest[name] = max(newest.get(name, 0.0), m.last_update)
    return [{"name": n, "type": "d", "mtime": int(t)} for n, t in sorted(newest.items())]
