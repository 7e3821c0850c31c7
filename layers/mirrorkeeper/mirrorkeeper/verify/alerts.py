"""Messages to people: an email-friendly subject and body, and a JSON body for pager endpoints,
sent as one SNS message with ``MessageStructure: json`` so each subscription gets its own form."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from mirrorkeeper.display import human_age
from mirrorkeeper.names import printable
from mirrorkeeper.s3errors import aws_errors
from mirrorkeeper.state import HealthState, Level, SyncOutcome
from mirrorkeeper.verify.health import OVERALL, Assessment
from mirrorkeeper.verify.history import Notice, changed_components

log = logging.getLogger(__name__)
SUBJECT_LIMIT = 99  # SNS: ASCII, under 100 characters, no line breaks


@dataclass(frozen=True)
class Message:
    subject: str
    text: str
    document: dict[str, Any]


def _ascii(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)


def compose(
    notice: Notice, mirror: str, previous: HealthState, assessment: Assessment, status_url: str = ""
) -> Message:
    overall = assessment.overall
    moved = changed_components(previous, assessment)
    bad = [f"{c} {lv.label}" for c, lv in assessment.levels.items() if lv is not Level.OK]
    name = mirror if len(mirror) <= 40 else mirror[:39] + "~"
    if notice is Notice.RESOLVED:
        headline = f"RESOLVED {name}: all ok"
    elif notice is Notice.REMINDER:
        since = previous.since.get(OVERALL, assessment.checked_at)
        took = human_age(assessment.checked_at - since)
        headline = f"still {overall.label.upper()} after {took} {name}: {', '.join(bad)}"
    else:
        headline = f"{overall.label.upper()} {name}: {', '.join(bad)}"
    # The level leads, so a long mirror name or many components never truncate it away.
    subject = _ascii(f"[mirrorkeeper] {headline}")
    if len(subject) > SUBJECT_LIMIT:
        subject = subject[: SUBJECT_LIMIT - 3] + "..."
    checked = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(assessment.checked_at))
    lines = [
        f"Mirror:   {mirror}",
        f"Overall:  {overall.label} (was {previous.level(OVERALL).label})",
        f"Checked:  {checked}",
        "",
        "Levels:",
        *(
            f"  {component:<8} {level.label:<9}" + (f"(was {moved[component][0].label})" if component in moved else "")
            for component, level in assessment.levels.items()
        ),
    ]
    if assessment.findings:
        lines += ["", "Findings:", *(f"  {f.component} ({f.level.label}): {f.reason}" for f in assessment.findings)]
    if status_url:
        lines += ["", f"Status page: {status_url}"]
    lines += [
        "",
        "What each finding means and what to do: the README's Operate section.",
        "You get one message when a level changes, a reminder while it stays bad, one when it is resolved.",
    ]
    document = {
        "mirror": mirror,
        "notice": notice.value,
        "overall": overall.label,
        "previous_overall": previous.level(OVERALL).label,
        "levels": {c: lv.label for c, lv in assessment.levels.items()},
        "changes": {c: {"from": a.label, "to": b.label} for c, (a, b) in moved.items()},
        "findings": [f.to_json() for f in assessment.findings],
        "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(assessment.checked_at)),
        "status_url": status_url,
    }
    return Message(subject, "\n".join(lines) + "\n", document)


def compose_quarantine(mirror: str, sync: SyncOutcome | None, status_url: str = "") -> Message:
    """The one message a quarantine gets: which paths stopped being retried every run, and why."""
    assert sync is not None and sync.newly_quarantined
    paths = list(sync.newly_quarantined)
    reasons = dict(sync.quarantined)
    name = mirror if len(mirror) <= 40 else mirror[:39] + "~"
    subject = _ascii(f"[mirrorkeeper] QUARANTINED {name}: {len(paths)} paths failing run after run")[:SUBJECT_LIMIT]
    lines = [
        f"Mirror:   {mirror}",
        f"Sync run: {sync.run_id}",
        "",
        "These paths failed the same way in several syncs in a row. They keep their published copy (or stay",
        "missing), are no longer tried every run but once a day, and are listed in the run report and on the",
        "status page. You get this message once.",
        "",
        *(f"  {printable(path)}: {reasons.get(path, 'see the run report')}" for path in paths),
    ]
    if status_url:
        lines += ["", f"Status page: {status_url}"]
    document = {
        "mirror": mirror,
        "notice": "quarantined",
        "run_id": sync.run_id,
        "paths": [{"path": p, "reason": reasons.get(p, "")} for p in paths],
        "status_url": status_url,
    }
    return Message(subject, "\n".join(lines) + "\n", document)


class Notifier(Protocol):
    def send(self, message: Message) -> None: ...


class SnsNotifier:
    def __init__(self, client: Any, topic_arn: str) -> None:
        self.client = client
        self.topic_arn = topic_arn

    def send(self, message: Message) -> None:
        body = json.dumps(message.document, ensure_ascii=False)
        # Email gets the text; HTTPS (pager), SQS and Lambda subscribers get JSON they can parse.
        structured = {
            "default": message.text,
            "email": message.text,
            "email-json": body,
            "http": body,
            "https": body,
            "sqs": body,
            "lambda": body,
        }
        with aws_errors("SNS", f"publish to {self.topic_arn}"):
            self.client.publish(
                TopicArn=self.topic_arn,
                Subject=message.subject,
                Message=json.dumps(structured, ensure_ascii=False),
                MessageStructure="json",
            )


class LogNotifier:
    """No topic configured: the message goes to the log, so a local run still shows it."""

    def send(self, message: Message) -> None:
        log.warning("alert (no SNS topic configured): %s", message.subject, extra={"alert": message.document})
