"""The push protocol against the moto server, step by step: the endpoint's decisions (admission.py), the
sync's follow-ups (sync/followups.py), the replay marks, and the races between them played out in the
orders that matter (docs/sync.md, "Pushes")."""

import json
import time
from typing import Any

import pytest

from mirrorkeeper.commands.sync import sync_following_pushes
from mirrorkeeper.config import AwsConfig, PushMirror, SyncConfig
from mirrorkeeper.errors import LockHeldError, UpstreamError
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.push.admission import Admission, Decision, abandon_start, admit
from mirrorkeeper.push.handler import PushHandler, PushRequest
from mirrorkeeper.push.signature import sign
from mirrorkeeper.push.starters import StartError
from mirrorkeeper.state import RATE_PERIOD, START_WINDOW, StateStore, StoredLease
from mirrorkeeper.sync.followups import FollowUps
from mirrorkeeper.sync.lease import Lease
from tests.support import BUCKET

LAYOUT = MirrorLayout.create(BUCKET, path="openvz")
NOW = time.time()


@pytest.fixture
def state(s3: Any) -> StateStore:
    return StateStore(s3, LAYOUT)


def stored(s3: Any) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket=BUCKET, Key="state/openvz/push.json")["Body"].read())  # type: ignore[no-any-return]


def test_a_push_starts_a_sync_and_the_pushes_behind_it_wait_for_it(state: StateStore, s3: Any) -> None:
    # GIVEN no sync running WHEN a push arrives THEN it starts one, and marks it on its way
    assert admit(state, NOW, 6).admission is Admission.STARTED
    assert stored(s3)["starting_at"] == NOW
    # WHEN more pushes arrive before that sync holds its lease THEN they wait for it instead of starting more
    assert [admit(state, NOW + i, 6).admission for i in (1, 2)] == [Admission.QUEUED] * 2
    assert stored(s3)["waiting"] == 2 and stored(s3)["starting_at"] == NOW


def test_pushes_during_a_run_make_exactly_one_follow_up(state: StateStore, s3: Any) -> None:
    # GIVEN a sync that a push started, holding its lease
    assert admit(state, NOW, 10).admission is Admission.STARTED
    with Lease(state, ttl=60):
        # WHEN three pushes arrive while it runs
        decisions = [admit(state, NOW + i, 10) for i in (1, 2, 3)]
    # THEN each waits (202 queued), counted once each
    assert [d.admission for d in decisions] == [Admission.QUEUED] * 3 and decisions[-1].waiting == 3
    # AND the run, having let go of its lease, takes all three at once: one follow-up
    followups = FollowUps(state, clock=lambda: NOW + 10)
    assert followups.take() == 3
    # AND that follow-up is on its way: a push now waits for it, and it takes that push when it ends
    assert admit(state, NOW + 11, 10).admission is Admission.QUEUED
    assert followups.take() == 1
    # AND a follow-up with nothing after it ends the chain: the next push starts a sync again
    assert followups.take() == 0 and stored(s3)["starting_at"] is None
    assert admit(state, NOW + 12, 10).admission is Admission.STARTED


def test_a_push_during_a_scheduled_run_waits_for_it(state: StateStore) -> None:
    # GIVEN a run no push started (the schedule's): only its lease says it runs
    with Lease(state, ttl=60):
        assert admit(state, NOW, 6).admission is Admission.QUEUED
    assert FollowUps(state).take() == 1


def test_a_push_racing_the_end_of_a_run_is_never_left_waiting(state: StateStore, s3: Any) -> None:
    # GIVEN a scheduled run, holding its lease
    lease = Lease(state, ttl=60)
    lease.acquire()

    class RunEndsMeanwhile(StateStore):
        """The endpoint's view: between its read of the push state and its write, the run lets go of its
        lease and takes the waiting pushes (none yet), so the endpoint's decision rests on a stale read."""

        ended = False

        def read_lease(self) -> StoredLease | None:
            seen = super().read_lease()
            if not self.ended:
                self.ended = True
                lease.release()
                assert FollowUps(state).take() == 0
            return seen

    # WHEN the push decides on the lease it saw held
    decision = admit(RunEndsMeanwhile(s3, LAYOUT), NOW, 6)
    # THEN its write of "waiting" fails (the run wrote after its read), it decides again, and starts a sync
    assert decision.admission is Admission.STARTED
    assert stored(s3)["waiting"] == 0


def test_the_run_always_writes_so_a_stale_read_cannot_win(state: StateStore, s3: Any) -> None:
    # GIVEN a state that taking nothing leaves the same in every field
    FollowUps(state).take()
    before = s3.head_object(Bucket=BUCKET, Key="state/openvz/push.json")["ETag"]
    # WHEN a run takes nothing again THEN the object still changes, so an ETag read before no longer matches
    FollowUps(state).take()
    assert s3.head_object(Bucket=BUCKET, Key="state/openvz/push.json")["ETag"] != before


def test_a_push_landing_after_a_pushed_run_let_go_of_its_lease_is_its_follow_up(state: StateStore) -> None:
    # GIVEN a run a push started, which has just let go of its lease but not yet looked for pushes
    assert admit(state, NOW, 6).admission is Admission.STARTED
    with Lease(state, ttl=60):
        pass
    # WHEN a push arrives now THEN the start mark makes it wait, and the run takes it
    assert admit(state, NOW + 1, 6).admission is Admission.QUEUED
    assert FollowUps(state).take() == 1


def test_a_follow_up_that_finds_another_run_hands_the_pushes_to_it(state: StateStore) -> None:
    with Lease(state, ttl=60):
        admit(state, NOW, 6)
    followups = FollowUps(state)
    assert followups.take() == 1
    # GIVEN another sync (the schedule's) takes the lease before the follow-up does
    with Lease(state, ttl=60):
        followups.give_back(1)
    # THEN that sync, ending, runs once more for the push
    assert FollowUps(state).take() == 1


def test_a_start_that_fails_is_unmarked_so_the_next_push_starts_one(state: StateStore) -> None:
    assert admit(state, NOW, 6).admission is Admission.STARTED
    abandon_start(state, NOW)
    assert admit(state, NOW + 1, 6).admission is Admission.STARTED


def test_a_start_that_never_took_its_lease_stops_holding_pushes_after_the_window(state: StateStore) -> None:
    assert admit(state, NOW, 6).admission is Admission.STARTED  # and the task never starts
    assert admit(state, NOW + 1, 6).admission is Admission.QUEUED
    assert admit(state, NOW + START_WINDOW + 1, 6).admission is Admission.STARTED


def test_the_rate_limit_counts_a_mirrors_pushes_of_the_last_minute(state: StateStore) -> None:
    decisions = [admit(state, NOW + i, 3) for i in range(4)]
    assert [d.admission for d in decisions] == [
        Admission.STARTED,
        Admission.QUEUED,
        Admission.QUEUED,
        Admission.LIMITED,
    ]
    assert decisions[-1].retry_after == RATE_PERIOD - 3
    # a minute after the first, one more fits
    assert admit(state, NOW + RATE_PERIOD, 3).admission is not Admission.LIMITED
    # and another mirror has a minute of its own
    other = StateStore(state.client, MirrorLayout.create(BUCKET, path="debian"))
    assert admit(other, NOW + 5, 3).admission is Admission.STARTED


def test_a_signature_is_used_once_host_wide(s3: Any) -> None:
    host = StateStore(s3, MirrorLayout.create(BUCKET))
    assert host.record_push_signature("ab" * 32)
    assert not host.record_push_signature("ab" * 32)
    # marked under the host's own state, which no mirror path can name
    (item,) = s3.list_objects_v2(Bucket=BUCKET, Prefix="state/.host/push/seen/")["Contents"]
    assert item["Key"] == "state/.host/push/seen/" + "ab" * 32


# -- the handler end to end, in process ---------------------------------------------------------


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.started: list[str] = []
        self.fail = fail

    def start(self, mirror: PushMirror) -> str:
        if self.fail:
            raise StartError("ECS said no")
        self.started.append(mirror.name)
        return "recorded"


def post(handler: PushHandler, secret: bytes = b"k", timestamp: str | None = None, body: bytes = b"{}") -> Any:
    stamp = timestamp or str(int(time.time()))
    headers = {"x-mirrorkeeper-timestamp": stamp, "x-mirrorkeeper-signature": sign(secret, stamp, body)}
    return handler.handle(PushRequest("POST", "/push/openvz", headers, len(body), lambda: body))


def make_handler(s3: Any, starter: Recorder) -> PushHandler:
    mirror = PushMirror("openvz", "openvz", LAYOUT, "env:UNUSED", rate_limit=6)
    return PushHandler({"openvz": mirror}, s3, LAYOUT.host, lambda m: b"k", starter)


def test_a_replayed_push_is_refused_and_starts_nothing(s3: Any) -> None:
    starter = Recorder()
    handler = make_handler(s3, starter)
    stamp = str(int(time.time()))
    first = post(handler, timestamp=stamp)
    assert (first.status, first.document["result"]) == (202, "started") and starter.started == ["openvz"]
    # WHEN the same request arrives again (the same signature)
    again = post(handler, timestamp=stamp)
    # THEN it is refused before the mirror's state is touched: no second start, nothing waiting
    assert again.status == 403 and "used already" in again.document["error"]
    assert starter.started == ["openvz"] and stored(s3)["waiting"] == 0


def test_a_push_whose_start_fails_is_503_and_leaves_no_start_mark(s3: Any) -> None:
    answer = post(make_handler(s3, Recorder(fail=True)))
    assert answer.status == 503 and answer.headers["Retry-After"] == "30"
    assert stored(s3)["starting_at"] is None
    # the next push starts the sync
    starter = Recorder()
    assert post(make_handler(s3, starter), body=b"[]").status == 202 and starter.started == ["openvz"]


def test_storage_trouble_is_503_never_a_start(s3: Any) -> None:
    s3.delete_bucket(Bucket=BUCKET)  # the replay mark cannot be written
    starter = Recorder()
    answer = post(make_handler(s3, starter))
    assert answer.status == 503 and starter.started == []


# -- the sync command's loop: once more while pushes came during the last run -----------------------


def sync_config(endpoint: str) -> SyncConfig:
    return SyncConfig("rsync://u/m/", LAYOUT, AwsConfig(endpoint, "us-east-1"), push_secret="env:UNUSED")


def test_the_sync_runs_once_more_for_pushes_that_came_during_it_then_stops(state: StateStore, endpoint: str) -> None:
    runs: list[int] = []

    def once() -> int:
        with Lease(state, ttl=60):
            runs.append(len(runs))
            if len(runs) == 1:  # pushes arrive during the first run only
                for i in range(3):
                    assert admit(state, time.time() + i, 10).admission is Admission.QUEUED
        return 5 if len(runs) == 1 else 0

    assert sync_following_pushes(sync_config(endpoint), once, "") == 0  # the last run's exit code
    assert runs == [0, 1]


def test_a_failed_run_is_followed_up_too_and_its_error_printed(
    state: StateStore, endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    runs: list[int] = []

    def once() -> int:
        with Lease(state, ttl=60):
            runs.append(len(runs))
            if len(runs) == 1:
                admit(state, time.time(), 10)
                raise UpstreamError("cannot list rsync://u/m/")
        return 0

    assert sync_following_pushes(sync_config(endpoint), once, "openvz: ") == 0
    assert runs == [0, 1]
    assert capsys.readouterr().err == "mirrorkeeper sync: openvz: error: cannot list rsync://u/m/\n"

    # without pushes, a failure is the command's failure as before
    def fails() -> int:
        raise UpstreamError("down")

    with pytest.raises(UpstreamError):
        sync_following_pushes(sync_config(endpoint), fails, "")


def test_a_run_that_finds_the_lease_held_leaves_the_pushes_to_the_holder(
    state: StateStore, endpoint: str, s3: Any
) -> None:
    holder = Lease(state, ttl=60)
    admitted: list[Decision] = []

    def once() -> int:
        if admitted:  # the follow-up: another sync (the schedule's) took the lease first
            holder.acquire()
            raise LockHeldError("another sync holds the lock")
        with Lease(state, ttl=60):
            admitted.append(admit(state, time.time(), 10))
        return 0

    assert sync_following_pushes(sync_config(endpoint), once, "") == 0
    # THEN the push waits for the holder, which runs once more for it when it ends
    holder.release()
    assert FollowUps(state).take() == 1

    # AND a first run that finds the lease held touches nothing: the holder follows up its own pushes
    def locked_out() -> int:
        Lease(state, ttl=60).acquire()
        return 0

    before = s3.head_object(Bucket=BUCKET, Key="state/openvz/push.json")["ETag"]
    with Lease(state, ttl=60), pytest.raises(LockHeldError):
        sync_following_pushes(sync_config(endpoint), locked_out, "")
    assert s3.head_object(Bucket=BUCKET, Key="state/openvz/push.json")["ETag"] == before
