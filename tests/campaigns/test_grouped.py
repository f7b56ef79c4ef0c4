"""campaigns.asyncdb.Grouped: concurrent requests' items written in one statement.

No database here: the flush is a coroutine the test controls, so each test can hold a
statement "running" while more items arrive and see exactly how they are grouped.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from campaigns.asyncdb import Grouped
from campaigns.services.offers_postgresql import FirstExposures, GroupedSteps, StepGroups
from campaigns.types import utcnow


class Flushes:
    """A flush that records its batches and returns each item doubled once released."""

    def __init__(self, *, fail_on: int | None = None, short: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail_on = fail_on
        self.short = short

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail_on in items:
            raise ValueError(f"item {self.fail_on} is bad")
        results = [item * 2 for item in items]
        return results[:-1] if self.short else results


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=10))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_an_idle_group_sends_an_item_at_once_and_alone() -> None:
    async def test() -> None:
        flushes = Flushes()
        flushes.release.set()
        group = Grouped(flushes, max_flushes=1)
        assert await group.submit(1) == 2
        assert await group.submit(2) == 4
        assert flushes.batches == [[1], [2]]

    run(test)


def test_items_that_arrive_during_a_flush_go_together_in_the_next() -> None:
    async def test() -> None:
        flushes = Flushes()
        group = Grouped(flushes, max_flushes=1)
        first = asyncio.create_task(group.submit(1))
        await settle()
        waiting = [asyncio.create_task(group.submit(item)) for item in (2, 3, 4)]
        await settle()
        assert flushes.batches == [[1]]  # the others wait for the running statement
        flushes.release.set()
        assert await first == 2
        assert await asyncio.gather(*waiting) == [4, 6, 8]  # each caller its own result
        assert flushes.batches == [[1], [2, 3, 4]]

    run(test)


def test_max_flushes_statements_run_at_once_and_max_batch_items_each() -> None:
    async def test() -> None:
        flushes = Flushes()
        group = Grouped(flushes, max_batch=2, max_flushes=2)
        tasks = [asyncio.create_task(group.submit(item)) for item in range(7)]
        await settle()
        # two statements started with what had arrived, two items each at most
        assert flushes.batches == [[0, 1], [2, 3]]
        flushes.release.set()
        assert await asyncio.gather(*tasks) == [item * 2 for item in range(7)]
        assert sorted(len(batch) for batch in flushes.batches) == [1, 2, 2, 2]

    run(test)


def test_a_failed_flush_fails_its_own_callers_only() -> None:
    async def test() -> None:
        flushes = Flushes(fail_on=3)
        group = Grouped(flushes, max_flushes=1)
        first = asyncio.create_task(group.submit(1))
        await settle()
        doomed = [asyncio.create_task(group.submit(item)) for item in (2, 3)]
        await settle()
        flushes.release.set()
        assert await first == 2
        for task in doomed:
            with pytest.raises(ValueError, match="item 3 is bad"):
                await task
        assert await group.submit(5) == 10  # the group goes on

    run(test)


def test_a_flush_that_answers_the_wrong_number_of_items_fails_loudly() -> None:
    async def test() -> None:
        flushes = Flushes(short=True)
        flushes.release.set()
        group = Grouped(flushes)
        with pytest.raises(RuntimeError, match="1 results for 2 items"):
            await asyncio.gather(group.submit(1), group.submit(2))

    run(test)


def test_a_caller_that_stops_waiting_leaves_the_others_their_results() -> None:
    async def test() -> None:
        flushes = Flushes()
        group = Grouped(flushes, max_flushes=1)
        first = asyncio.create_task(group.submit(1))
        await settle()
        gone = asyncio.create_task(group.submit(2))
        kept = asyncio.create_task(group.submit(3))
        await settle()
        gone.cancel()
        await settle()
        flushes.release.set()
        assert await first == 2
        assert await kept == 6
        assert gone.cancelled()
        # A caller cancelled before its batch started is not sent at all.
        assert flushes.batches == [[1], [3]]

    run(test)


class Coming:
    """How many items the test says are still coming (``Grouped``'s ``coming``)."""

    def __init__(self, count: int = 0) -> None:
        self.count = count

    def __call__(self) -> int:
        return self.count


def test_a_batch_waits_for_the_items_coming_and_goes_once_they_are_in() -> None:
    async def test() -> None:
        flushes = Flushes()
        flushes.release.set()
        coming = Coming(2)
        group = Grouped(flushes, linger=5.0, coming=coming)
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = asyncio.create_task(group.submit(1))
        await settle()
        assert flushes.batches == []  # two more are on their way
        coming.count = 1
        second = asyncio.create_task(group.submit(2))
        await settle()
        assert flushes.batches == []
        coming.count = 0
        third = asyncio.create_task(group.submit(3))
        assert await asyncio.gather(first, second, third) == [2, 4, 6]
        assert flushes.batches == [[1, 2, 3]]
        assert loop.time() - started < 1.0  # long before the linger ran out

    run(test)


def test_a_lone_item_is_sent_at_once_whatever_the_linger() -> None:
    async def test() -> None:
        flushes = Flushes()
        flushes.release.set()
        group = Grouped(flushes, linger=5.0, coming=Coming(0))
        started = asyncio.get_running_loop().time()
        assert await group.submit(1) == 2
        assert asyncio.get_running_loop().time() - started < 1.0
        assert flushes.batches == [[1]]

    run(test)


def test_items_that_do_not_come_delay_a_batch_by_the_linger_at_most() -> None:
    async def test() -> None:
        flushes = Flushes()
        flushes.release.set()
        group = Grouped(flushes, linger=0.05, coming=Coming(3))
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await asyncio.gather(group.submit(1), group.submit(2)) == [2, 4]
        waited = loop.time() - started
        assert 0.04 <= waited < 1.0
        assert flushes.batches == [[1, 2]]
        # each batch waits again: the next one too is held for the linger only
        started = loop.time()
        assert await group.submit(3) == 6
        assert 0.04 <= loop.time() - started < 1.0

    run(test)


def test_a_full_batch_does_not_wait() -> None:
    async def test() -> None:
        flushes = Flushes()
        flushes.release.set()
        group = Grouped(flushes, max_batch=2, linger=5.0, coming=Coming(10))
        results = await asyncio.wait_for(
            asyncio.gather(group.submit(1), group.submit(2)), timeout=1.0)
        assert results == [2, 4]
        assert flushes.batches == [[1, 2]]

    run(test)


class ExposureDatabase:
    """Answers the exposure statement as if every row were a first exposure, and records
    how many requests' rows each statement carried."""

    autocommit = True

    def __init__(self) -> None:
        self.statements: list[list[int]] = []

    async def execute(self, query: str, params: dict[str, Any], *,
                      prepare: bool | None = None) -> Any:
        rows = json.loads(params["exposures"])
        self.statements.append(sorted({row["customer_id"] for row in rows}))
        result = [(row["customer_id"], row["campaign_id"], row["arm_id"], 0, 0, None, None,
                   None, None, None, None) for row in rows]

        class Rows:
            async def fetchall(self) -> list[Any]:
                return result
        return Rows()

    def groups(self) -> StepGroups:
        """A process's step groups on this database, with a linger no test waits out."""
        async def run(work: Callable[[Any], Awaitable[Any]]) -> Any:
            return await work(self)
        return StepGroups(lambda: run, exposure_linger=5.0)


def exposure(customer_id: int) -> FirstExposures:
    return FirstExposures(customer_id, [(1, 10, 1)], None, utcnow())


def test_exposures_wait_for_the_requests_still_getting_their_customer() -> None:
    async def test() -> None:
        database = ExposureDatabase()
        groups = database.groups()
        loop = asyncio.get_running_loop()
        started = loop.time()
        first, second, third = (GroupedSteps(groups) for _ in range(3))
        for steps in (first, second, third):
            await steps.__aenter__()  # three requests in flight
        exposed = [asyncio.create_task(first.expose(exposure(1)))]
        await settle()
        assert database.statements == []  # the two others may still expose
        exposed.append(asyncio.create_task(second.expose(exposure(2))))
        await settle()
        assert database.statements == []  # the third one still may
        await third.__aexit__(None, None, None)  # ends without exposures
        standing = await asyncio.gather(*exposed)
        for steps in (first, second):
            await steps.__aexit__(None, None, None)
        assert [list(by_campaign) for by_campaign in standing] == [[1], [1]]
        assert database.statements == [[1, 2]]
        assert loop.time() - started < 1.0
        assert (groups.in_flight, groups.exposing) == (0, 0)

    run(test)


def test_a_lone_request_exposes_at_once() -> None:
    async def test() -> None:
        database = ExposureDatabase()
        groups = database.groups()
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with GroupedSteps(groups) as steps:
            assert await steps.expose(exposure(1)) != {}
        assert loop.time() - started < 1.0
        assert database.statements == [[1]]

    run(test)
