"""Pushes that arrive while a mirror syncs: one more run after it, however many came, never a pile of runs.

The push endpoint (``mirrorkeeper.push``) counts a push as *waiting* when the mirror's lease is held or a
sync it started is on its way (``PushState``). A run of a mirror that takes pushes, once it has let go
of its lease, takes the waiting pushes and runs once more for all of them: that run's listing starts
after they arrived, so it sees what they announced.

Both sides change ``state/<path>/push.json`` with conditional writes only, and in this order: the run
lets go of the lease *before* it takes the waiting pushes, and the endpoint reads ``push.json`` *before*
the lease. So a push that lands as a run ends is either taken by that run or finds the lease free and
starts a sync itself; it is never left waiting for a run that has gone (docs/sync.md, "Pushes").
"""

import time
from collections.abc import Callable
from dataclasses import replace

from mirrorkeeper.state import PushState, StateStore


class FollowUps:
    def __init__(self, state: StateStore, clock: Callable[[], float] = time.time) -> None:
        self.state, self.clock = state, clock

    def take(self) -> int:
        """After a run has let go of its lease: the pushes that arrived while it ran (0: none). Taking
        them marks the follow-up as on its way, so pushes meanwhile wait for it too; taking none ends
        any start on its way, this run's own. It always writes, so that an endpoint that read the
        state before the run let go of its lease writes in vain, reads again and finds the lease free."""
        taken = 0

        def take_waiting(current: PushState) -> PushState:
            nonlocal taken
            taken = current.waiting
            return replace(current, waiting=0, starting_at=self.clock() if taken else None)

        self.state.change_push_state(take_waiting)
        return taken

    def give_back(self, pushes: int) -> None:
        """The follow-up found another sync holding the lease: the pushes wait for that one to end."""
        self.state.change_push_state(lambda current: replace(current, waiting=current.waiting + pushes))
