"""The sync lease against the moto server: exclusive, renewed while held, taken over only when expired."""

import json
import time
from typing import Any

import pytest

from mirrorkeeper.errors import LockHeldError, LockLostError
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.state import StateStore
from mirrorkeeper.sync.lease import Lease
from tests.support import BUCKET

KEY = "state/lock.json"


def test_renewal_keeps_a_short_lease_alive_and_excludes_others(s3: Any) -> None:
    with Lease(StateStore(s3, MirrorLayout.create(BUCKET)), ttl=0.6) as holder:
        first = s3.head_object(Bucket=BUCKET, Key=KEY)["ETag"]
        time.sleep(1.5)  # more than twice the time to live
        assert s3.head_object(Bucket=BUCKET, Key=KEY)["ETag"] != first  # renewed
        body = json.loads(s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read())
        assert body["owner"] == holder.owner and body["expires_at"] > time.time()
        with pytest.raises(LockHeldError, match="holds the lock"):
            Lease(StateStore(s3, MirrorLayout.create(BUCKET)), ttl=0.6).acquire()
        holder.check()
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=KEY)


def test_a_holder_whose_lease_was_taken_over_stops(s3: Any) -> None:
    slow = Lease(StateStore(s3, MirrorLayout.create(BUCKET)), ttl=0.3)
    slow.acquire()  # never renewed: it expires (by S3's clock, whole seconds: ttl + 1 s of grace)
    time.sleep(2.5)
    with Lease(StateStore(s3, MirrorLayout.create(BUCKET)), ttl=60) as newcomer:
        slow.start_renewing()
        time.sleep(0.3)
        with pytest.raises(LockLostError, match="replaced our sync lock"):
            slow.check()
        slow.release()
        # the loser's release must not delete the winner's lease
        owner = json.loads(s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read())["owner"]
        assert owner == newcomer.owner


def test_expiry_is_judged_by_the_stores_clock_not_the_holders(s3: Any) -> None:
    # GIVEN a holder whose clock runs a day fast: the lease it writes says it expires tomorrow
    store = StateStore(s3, MirrorLayout.create(BUCKET))
    skewed = Lease(store, ttl=1.0, clock=lambda: time.time() + 86400)
    skewed.acquire()  # then it dies: never renewed, never released
    body = json.loads(s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read())
    assert body["expires_at"] > time.time() + 86000
    # WHEN another run looks once S3's clock says the time to live (and a second of grace) is over:
    # whole seconds on both stamps, so more than 3 s
    time.sleep(3.5)
    # THEN it takes over, whatever the document's own dates say
    with Lease(store, ttl=60) as newcomer:
        owner = json.loads(s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read())["owner"]
        assert owner == newcomer.owner


def test_a_holder_with_a_slow_clock_cannot_be_cut_short(s3: Any) -> None:
    # GIVEN a newcomer whose clock runs a day fast, and a live holder
    store = StateStore(s3, MirrorLayout.create(BUCKET))
    # THEN the newcomer sees the lease as held (by S3's clock), not as expired a day ago
    with Lease(store, ttl=30), pytest.raises(LockHeldError, match="holds the lock"):
        Lease(store, ttl=30, clock=lambda: time.time() + 86400).acquire()
