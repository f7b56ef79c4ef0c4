"""Catalog: the per-process configuration cache, reloaded when the epoch it read moved."""

from __future__ import annotations

import time

from sqlmodel import Session

from campaigns.services.catalog import Catalog
from campaigns.services.epoch import bump_config_epoch


class TestSnapshot:
    def test_cached_snapshot_served_while_a_check_is_due(self, session: Session) -> None:
        catalog = Catalog(refresh_interval=0.05)
        first = catalog.snapshot(session)
        assert catalog.current() is first
        catalog.invalidate()
        assert catalog.current() is None  # invalidated: loaded again, on a thread
        second = catalog.snapshot(session)
        assert second is not first and catalog.current() is second
        # A check due does not hide the snapshot: the API key check reads the epoch
        # first (web.deps.SharedReads), and the snapshot goes when the epoch moved.
        time.sleep(0.06)
        assert catalog.epoch_due()
        assert catalog.current() is second

    def test_reloaded_once_the_epoch_read_has_moved(self, session: Session) -> None:
        catalog = Catalog(refresh_interval=0)
        first = catalog.snapshot(session)
        assert catalog.snapshot(session) is first
        bump_config_epoch(session)
        assert catalog.epoch(session) == first.epoch + 1
        assert catalog.current() is None
        second = catalog.snapshot(session)
        assert second.epoch == first.epoch + 1 and catalog.current() is second
        assert catalog.reloads == 2
