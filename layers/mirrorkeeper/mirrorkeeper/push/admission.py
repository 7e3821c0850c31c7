"""The endpoint's side of the mirror's push state (``state/<path>/push.json``): whether a signed push
starts a sync, waits for the one that runs, or is one too many this minute.

A push *waits* when the mirror's lease is held or a sync that a push started is still on its way to
taking it; the run, once it has let go of the lease, takes every push that waited and runs once more
(sync/followups.py). Otherwise the push starts a sync, and marks it on its way, so that the pushes
behind it wait for it instead of starting more. Each decision is one conditional write of the state
it was made from: two pushes at once, or a push and a run ending, cannot both act on the same state;
the loser reads again and decides again.

The state is read *before* the lease: a run ending lets go of its lease before it writes the state,
so if we saw its lease held, our write comes after its read of the state or fails (docs/sync.md,
"Pushes", walks through the races).
"""

import math
from dataclasses import dataclass, replace
from enum import StrEnum

from mirrorkeeper.state import RATE_PERIOD, PushState, StateStore


class Admission(StrEnum):
    STARTED = "started"  # the caller starts the sync now
    QUEUED = "queued"  # a sync runs or is on its way: it runs once more after
    LIMITED = "limited"  # the mirror's pushes of the last minute are used up


@dataclass(frozen=True)
class Decision:
    admission: Admission
    waiting: int = 0  # pushes waiting for the follow-up, this one included
    retry_after: int = 0  # seconds until the rate limit admits another push


def admit(state: StateStore, now: float, per_minute: int) -> Decision:
    """Decide a valid push's fate and record it (module docstring). A STARTED decision marks the sync
    on its way at ``now``: the caller starts it, or calls :func:`abandon_start` with ``now``."""
    decision = Decision(Admission.LIMITED)

    def decide(current: PushState) -> PushState | None:
        nonlocal decision
        lease = state.read_lease()  # after the state: see the module docstring
        recent = current.recent(now)
        if len(recent) >= per_minute:
            decision = Decision(Admission.LIMITED, retry_after=max(1, math.ceil(min(recent) + RATE_PERIOD - now)))
            return None
        accepted = (*recent, now)
        if (lease is not None and not lease.expired) or current.starting(now):
            decision = Decision(Admission.QUEUED, waiting=current.waiting + 1)
            return replace(current, waiting=current.waiting + 1, accepted=accepted)
        # The run about to start sees whatever the pushes before it announced: none is left waiting.
        decision = Decision(Admission.STARTED)
        return replace(current, waiting=0, starting_at=now, accepted=accepted)

    state.change_push_state(decide)
    return decision


def abandon_start(state: StateStore, started_at: float) -> None:
    """The sync marked on its way at ``started_at`` could not be started: unmark it, so that the next
    push starts one (which also runs for any push that waited for this one)."""
    state.change_push_state(
        # Another start, or a run that ended, may have moved on already: then leave it be.
        lambda current: replace(current, starting_at=None) if current.starting_at == started_at else None
    )
