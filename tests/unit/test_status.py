"""status.json and status.html rendered from a HealthState built here (no network, no browser;
tests/functional/test_status_browser.py opens the page in Chromium)."""

import itertools
import json
import re
from html.parser import HTMLParser

import pytest

from mirrorkeeper.state import HealthState, HistoryPoint, ProtocolStatus, SyncOutcome
from mirrorkeeper.verify.health import HISTORY_SECONDS
from mirrorkeeper.verify.status import (
    BAR_WIDTH,
    COLOURS,
    age_level,
    bar_width,
    history_cells,
    human_age,
    render_status_html,
    render_status_json,
)

NOW = 1_780_000_000.0 + 1234  # 20:47:14 UTC: not on an hour boundary, so the window's edges are exercised
HOUR = 3600.0
INTERVAL = HOUR
VOID = {"meta", "br", "rect", "hr", "img", "input", "link", "wbr"}


def point(t: float, overall: str = "ok") -> HistoryPoint:
    return HistoryPoint(t, overall, {"http": overall}, {"http": 600.0}, 100.0)


def make_state(
    name_reason: str = "stale: last sync 10.0 h ago (down after 6.0 h)", history: list[HistoryPoint] | None = None
) -> HealthState:
    """http fresh and ok, ftp ten hours stale and down, a failed last sync, drift of 3."""
    return HealthState(
        levels={"http": "ok", "ftp": "down", "mirror": "degraded", "overall": "down"},
        since={"overall": NOW - 2 * HOUR},
        last_sync=SyncOutcome(
            NOW - 1800, False, 1, "the sync failed (exit 1); read the task's log", "ecs-event", duration=245.4
        ),
        checked_at=NOW - 30,
        protocols={
            "http": ProtocolStatus("https://mirror.test/pub/", "ok", int(NOW - 1800), 14, 0, True, 41.7, []),
            "ftp": ProtocolStatus(
                "ftp://mirror.test/", "down", int(NOW - 10 * HOUR), 10, 2, False, 120.0, [name_reason]
            ),
        },
        mirror_reasons=["3 objects differ from the manifest"],
        completion=99.512,
        drift=3,
        lag=0,
        history=history if history is not None else [point(NOW - 600)],
    )


class Elements(HTMLParser):
    """Start tags with their attributes, the text, and whether every element closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.open: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.errors.append(f"unexpected </{tag}>")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: bytes) -> Elements:
    parser = Elements()
    parser.feed(page.decode("utf-8"))
    parser.close()
    return parser


# -- status.json ----------------------------------------------------------------------------------


def test_json_has_the_fields_mirror_tools_read() -> None:
    # GIVEN a state with one fresh and one stale protocol and a failed sync
    state = make_state()
    # WHEN status.json is rendered
    doc = json.loads(render_status_json(state, "mirror.test", INTERVAL, NOW))
    # THEN the top-level fields carry the state's values, times in ISO UTC
    assert doc["mirror"] == "mirror.test"
    assert doc["generated"] == "2026-05-28T20:47:14Z"
    assert doc["status"] == "down"
    assert doc["last_sync"] == "2026-05-28T20:17:14Z"
    assert doc["last_sync_epoch"] == round(NOW - 1800)
    assert doc["last_sync_ok"] is False
    assert doc["delay"] == 1800  # the newest trace any protocol served (http), not the stale one
    assert doc["duration"] == 245.4
    assert doc["completion_pct"] == 0.99512  # a fraction, in the unit of Arch Linux's mirror status
    assert doc["sync_interval"] == 3600
    assert (doc["degraded_after"], doc["down_after"]) == (7200, 21600)
    # AND each protocol has its level, trace age and last probe results
    assert doc["protocols"]["http"] == {
        "status": "ok",
        "url": "https://mirror.test/pub/",
        "delay": 1800,
        "trace_epoch": int(NOW - 1800),
        "probes_passed": 14,
        "probes_failed": 0,
        "missing_file_check": True,
        "latency_ms": 41.7,
        "reasons": [],
    }
    assert doc["protocols"]["ftp"]["status"] == "down"
    assert doc["protocols"]["ftp"]["delay"] == 36000
    assert doc["protocols"]["ftp"]["missing_file_check"] is False
    # AND the content component sits under "content" ("mirror" is the name tools expect)
    assert doc["content"] == {
        "status": "degraded",
        "drift": 3,
        "lag": 0,
        "reasons": ["3 objects differ from the manifest"],
    }
    assert doc["history"] == [
        {
            "t": round(NOW - 600),
            "status": "ok",
            "levels": {"http": "ok"},
            "freshness": {"http": 600},
            "completion_pct": 1.0,
        }
    ]


def test_json_delay_falls_back_to_the_last_sync_then_to_null() -> None:
    # GIVEN no protocol served a trace file
    state = make_state()
    for status in state.protocols.values():
        status.trace_epoch = None
    # WHEN / THEN the delay is the time since the last sync ended
    assert json.loads(render_status_json(state, "m", INTERVAL, NOW))["delay"] == 1800
    # AND with no sync known either, it is null, as are the sync fields
    state.last_sync = None
    doc = json.loads(render_status_json(state, "m", INTERVAL, NOW))
    assert (doc["delay"], doc["last_sync"], doc["duration"]) == (None, None, None)


def test_a_protocol_known_only_by_its_level_is_still_listed() -> None:
    # GIVEN the probe step failed, so the state has a level for rsync but no probe record
    state = make_state()
    state.levels["rsync"] = "degraded"
    # WHEN both files are rendered
    doc = json.loads(render_status_json(state, "m", INTERVAL, NOW))
    page = parse(render_status_html(state, "m", INTERVAL, NOW))
    # THEN rsync appears with its level and no probe numbers
    assert doc["protocols"]["rsync"]["status"] == "degraded"
    assert doc["protocols"]["rsync"]["probes_passed"] is None
    rows = {a["data-protocol"]: a["data-level"] for t, a in page.tags if t == "tr" and a.get("class") == "protocol"}
    assert rows == {"http": "ok", "ftp": "down", "rsync": "degraded"}


# -- status.html ----------------------------------------------------------------------------------


def test_html_is_well_formed_and_self_contained() -> None:
    # GIVEN a rendered page
    raw = render_status_html(make_state(), "mirror.test", INTERVAL, NOW)
    page = parse(raw)
    # THEN every element closes in order, and it declares UTF-8 and its own strict CSP
    assert raw.startswith(b"<!DOCTYPE html>")
    assert page.errors == []
    assert page.open == []
    assert ("meta", {"charset": "utf-8"}) in page.tags
    assert any(a.get("http-equiv") == "Content-Security-Policy" for t, a in page.tags if t == "meta")
    # AND nothing runs or is fetched: no script, no external resource, no CSS url()
    assert not [t for t, _ in page.tags if t in ("script", "link", "img", "iframe", "object")]
    assert not [a for _, a in page.tags if "src" in a or any(k.startswith("on") for k in a)]
    assert b"url(" not in raw
    assert b"@import" not in raw
    # AND the only links are the protocol URLs and the sibling status.json
    links = [a["href"] for t, a in page.tags if t == "a"]
    assert links == ["status.json", "https://mirror.test/pub/", "ftp://mirror.test/"]


def test_html_escapes_hostile_names_reasons_and_urls() -> None:
    # GIVEN a mirror name, a reason and a URL that are markup
    name = "<script>alert(1)</script> \"quoted\" & 'single' </title>"
    reason = "wrong status: <img src=x onerror=alert(2)>"
    state = make_state(name_reason=reason)
    state.protocols["http"].url = 'javascript:alert(3)//"><b>'
    # WHEN the page is rendered
    raw = render_status_html(state, name, INTERVAL, NOW)
    page = parse(raw)
    # THEN no element came from the data, and the data reads back as text
    assert [t for t, _ in page.tags if t in ("script", "img", "b")] == []
    text = "".join(page.text)
    assert f"Mirror status: {name}" in text
    assert reason in text
    assert 'javascript:alert(3)//"><b>' in text
    # AND a URL with a scheme browsers would execute is shown, not linked
    assert not [a for t, a in page.tags if t == "a" and "javascript" in (a.get("href") or "")]
    assert b"<script>" not in raw


@pytest.mark.parametrize(
    ("age", "level"),
    [
        (0, "ok"),
        (2 * INTERVAL, "ok"),
        (2 * INTERVAL + 1, "degraded"),
        (6 * INTERVAL, "degraded"),
        (6 * INTERVAL + 1, "down"),
        (30 * INTERVAL, "down"),
    ],
)
def test_bar_colour_follows_the_health_thresholds(age: float, level: str) -> None:
    # GIVEN a trace this old / WHEN its level is judged / THEN it matches health.py's rule (strictly beyond)
    assert age_level(age, INTERVAL) == level


def test_bars_scale_with_age_up_to_full_width() -> None:
    # GIVEN traces of increasing age
    ages = [0.0, 0.5 * INTERVAL, INTERVAL, 2 * INTERVAL, 4 * INTERVAL]
    # WHEN their bar widths are computed
    widths = [bar_width(age, INTERVAL) for age in ages]
    # THEN width is proportional to age (full width = 8 intervals) and capped beyond
    assert widths == [0.0, 15.0, 30.0, 60.0, 120.0]
    assert bar_width(8 * INTERVAL, INTERVAL) == BAR_WIDTH
    assert bar_width(80 * INTERVAL, INTERVAL) == BAR_WIDTH
    assert bar_width(-50, INTERVAL) == 0.0  # a trace from the future (clock skew) is fresh, not negative
    # AND the rendered page draws them: http 30 min old in green, ftp 10 h old full and red
    page = parse(render_status_html(make_state(), "m", INTERVAL, NOW))
    bars = [(a["data-level"], a["width"], a["fill"]) for t, a in page.tags if t == "rect" and a.get("class") == "age"]
    assert bars == [("ok", "15.0", COLOURS["ok"]), ("down", f"{BAR_WIDTH:.1f}", COLOURS["down"])]


def test_ages_read_like_people_say_them() -> None:
    # GIVEN / WHEN / THEN the steps seconds, minutes, hours, days
    assert [human_age(s) for s in (45, 180, 2.1 * HOUR, 3.5 * 86400, -5)] == [
        "45 s",
        "3 min",
        "2.1 h",
        "3.5 days",
        "0 s",
    ]


def test_history_covers_14_days_and_drops_nothing_inside_them() -> None:
    # GIVEN a check every 20 minutes for exactly 14 days, one down check among ok ones, a point older
    # than 14 days and one stamped a minute in the future (another host's clock)
    inside = [point(NOW - HISTORY_SECONDS + 1 + i * 1200) for i in range(14 * 72)]
    down_at = inside[500].t
    inside[500] = point(down_at, "down")
    future = point(NOW + 60)
    stale = point(NOW - HISTORY_SECONDS - 2 * HOUR)
    # WHEN the hour cells are built
    cells = history_cells([stale, *inside, future], NOW)
    # THEN one cell per UTC hour spans the whole 14 days up to the current hour
    assert len(cells) == 14 * 24 + 1
    assert cells[0].start <= NOW - HISTORY_SECONDS
    assert cells[-1].start <= NOW < cells[-1].start + HOUR
    assert [b.start - a.start for a, b in itertools.pairwise(cells)] == [3600] * (len(cells) - 1)
    # AND every point inside the window is in exactly one cell; only the stale one is left out
    placed = [p for cell in cells for p in cell.points]
    assert sorted(p.t for p in placed) == sorted(p.t for p in [*inside, future])
    assert future in cells[-1].points
    # AND the single down check colours its hour
    assert [c.level for c in cells if c.level != "ok"] == ["down"]
    assert next(c for c in cells if c.level == "down").start == int(down_at // HOUR) * HOUR


def test_history_in_the_page_and_the_json_agree() -> None:
    # GIVEN two checks in every hour of the 14 days (at :10 and :40), except for 24 hours without any
    first_hour = (NOW - HISTORY_SECONDS) // HOUR * HOUR
    points = [
        point(first_hour + h * HOUR + minute * 60)
        for h in range(14 * 24 + 1)
        if not 100 <= h < 124
        for minute in (10, 40)
    ]
    state = make_state(history=points)
    # WHEN both files are rendered
    page = parse(render_status_html(state, "m", INTERVAL, NOW))
    doc = json.loads(render_status_json(state, "m", INTERVAL, NOW))
    # THEN the page has a titled cell per hour, 24 of them empty, and the day rows count every check
    cells = [a for t, a in page.tags if t == "span" and (a.get("class") or "").startswith("c ")]
    titled = [a for a in cells if a.get("title")]
    assert len(titled) == 14 * 24 + 1
    assert sum("no check" in (a["title"] or "") for a in titled) == 24
    counted = sum(int(n) for n in re.findall(r"(\d+) checks?:", "\n".join(page.text)))
    assert counted == len(points)
    # AND a cell's tooltip gives the hour and the level
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:00 UTC: ok \(2 checks: 2 ok\)", titled[5]["title"] or "")
    # AND the JSON keeps every point, oldest first
    assert [p["t"] for p in doc["history"]] == [round(p.t) for p in points]
