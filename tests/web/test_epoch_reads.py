"""SharedReads: requests that find the configuration epoch due at the same time share one
read of it, unless the interval is 0."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from web.deps import SharedReads


class SlowCatalog:
    """Catalog's epoch interface; each read takes a while, on the thread it is run on."""

    def __init__(self, refresh_interval: float, *, fail_first: bool = False) -> None:
        self.refresh_interval = refresh_interval
        self.cached_epoch = 0
        self.reads = 0
        self.fail_first = fail_first
        self._lock = threading.Lock()

    def epoch_due(self) -> bool:
        return True  # as for a worker that has been idle for an interval

    def epoch(self, session: Any) -> int:
        with self._lock:
            self.reads += 1
            failing = self.fail_first and self.reads == 1
        time.sleep(0.05)
        if failing:
            raise ConnectionError("the database went away")
        self.cached_epoch = 7
        return 7


async def _session() -> str:
    return "a session"


async def _arrive(reads: SharedReads, catalog: SlowCatalog, count: int) -> list[Any]:
    return await asyncio.gather(*(reads.epoch(catalog, _session) for _ in range(count)),
                                return_exceptions=True)


def test_requests_arriving_together_share_one_read() -> None:
    catalog = SlowCatalog(refresh_interval=1.0)
    epochs = asyncio.run(_arrive(SharedReads(), catalog, 20))
    assert epochs == [7] * 20
    assert catalog.reads == 1


def test_with_an_interval_of_zero_every_request_reads() -> None:
    catalog = SlowCatalog(refresh_interval=0.0)
    assert asyncio.run(_arrive(SharedReads(), catalog, 5)) == [7] * 5
    assert catalog.reads == 5


def test_after_a_failed_read_the_others_read_their_own() -> None:
    catalog = SlowCatalog(refresh_interval=1.0, fail_first=True)
    outcomes = asyncio.run(_arrive(SharedReads(), catalog, 10))
    assert isinstance(outcomes[0], ConnectionError)  # the reader's own request fails
    assert outcomes[1:] == [7] * 9


def test_a_read_under_way_for_an_interval_is_not_waited_for() -> None:
    # A read stuck on a database that went away may take until a timeout: requests that
    # arrive an interval after it began read for themselves.
    catalog = SlowCatalog(refresh_interval=0.02)
    reads = SharedReads()

    async def scenario() -> list[Any]:
        first = asyncio.create_task(reads.epoch(catalog, _session))
        await asyncio.sleep(0.03)
        return await asyncio.gather(first, reads.epoch(catalog, _session))

    assert asyncio.run(scenario()) == [7, 7]
    assert catalog.reads == 2


def test_when_the_reader_is_cancelled_the_others_read_their_own() -> None:
    catalog = SlowCatalog(refresh_interval=1.0)
    reads = SharedReads()

    async def scenario() -> list[Any]:
        reader = asyncio.create_task(reads.epoch(catalog, _session))
        await asyncio.sleep(0.01)  # the reader is reading, on its thread
        waiters = [asyncio.create_task(reads.epoch(catalog, _session)) for _ in range(5)]
        await asyncio.sleep(0.01)
        reader.cancel()
        return await asyncio.gather(reader, *waiters, return_exceptions=True)

    outcomes = asyncio.run(scenario())
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert outcomes[1:] == [7] * 5
    assert catalog.reads == 6  # the waiters read again


@pytest.mark.parametrize("interval", [1.0, 0.0])
def test_no_read_is_left_pending(interval: float) -> None:
    reads = SharedReads()
    catalog = SlowCatalog(refresh_interval=interval, fail_first=True)
    asyncio.run(_arrive(reads, catalog, 3))
    assert reads._pending == {}
