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
    slow.acquire()  # never renewed: it expires
    time.sleep(0.4)
    with Lease(StateStore(s3, MirrorLayout.create(BUCKET)), ttl=60) as newcomer:
        slow.start_renewing()
        time.sleep(0.3)
        with pytest.raises(LockLostError, match="replaced our sync lock"):
            slow.check()
        slow.release()
        # the loser's release must not delete the winner's lease
        owner = json.loads(s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read())["owner"]
        assert owner == newcomer.owner
