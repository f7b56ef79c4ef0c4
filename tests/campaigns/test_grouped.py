"""campaigns.asyncdb.Grouped: concurrent requests' items written in one statement.

No database here: the flush is a coroutine the test controls, so each test can hold a
statement "running" while more items arrive and see exactly how they are grouped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from campaigns.asyncdb import Grouped


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
