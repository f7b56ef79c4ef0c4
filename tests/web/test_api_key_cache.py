"""The API key check's cache: one lookup for the requests that miss together, a refresh
ahead of expiry that nobody waits for, and nothing stale kept across a revocation."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from campaigns.models import ApiScope
from web import deps
from web.deps import ApiKeyCache, Caller, SharedReads

SECRET = "cs_secret"


class Catalog:
    """The epoch side of campaigns.services.catalog.Catalog, never due: epoch 3."""

    refresh_interval = 1.0
    cached_epoch = 3

    def epoch_due(self) -> bool:
        return False


class SlowKeys:
    """Stands in for the key query: counts the lookups, each taking ``seconds``."""

    def __init__(self, seconds: float = 0.05, *, fail_first: bool = False,
                 fail_on: int | None = None) -> None:
        self.seconds = seconds
        self.fail_on = 1 if fail_first else fail_on
        self.lookups = 0
        self._lock = threading.Lock()

    def __call__(self, session: Any, secret: str) -> Caller | None:
        with self._lock:
            self.lookups += 1
            failing = self.lookups == self.fail_on
        time.sleep(self.seconds)
        if failing:
            raise ConnectionError("the database went away")
        return Caller(api_key_id=1, name="shop", scope=ApiScope.STOREFRONT)


def request(cache: ApiKeyCache, reads: SharedReads) -> Any:
    app = SimpleNamespace(state=SimpleNamespace(api_key_cache=cache, catalog=Catalog()))
    return SimpleNamespace(app=app, state=SimpleNamespace(shared_reads=reads))


async def session() -> str:
    return "a session"


async def arrive(cache: ApiKeyCache, reads: SharedReads, count: int) -> list[Any]:
    return await asyncio.gather(*(deps._lookup(request(cache, reads), session, SECRET)
                                  for _ in range(count)), return_exceptions=True)


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> SlowKeys:
    slow = SlowKeys()
    monkeypatch.setattr(deps, "_load_caller", slow)
    return slow


def test_requests_that_miss_together_share_one_lookup(keys: SlowKeys) -> None:
    callers = asyncio.run(arrive(ApiKeyCache(), SharedReads(), 20))
    assert [caller.name for caller in callers] == ["shop"] * 20
    assert keys.lookups == 1


def test_a_cached_key_is_not_looked_up_again(keys: SlowKeys) -> None:
    cache, reads = ApiKeyCache(), SharedReads()
    asyncio.run(arrive(cache, reads, 1))
    asyncio.run(arrive(cache, reads, 5))
    assert keys.lookups == 1


def test_with_no_cache_every_request_looks_up(keys: SlowKeys) -> None:
    # config_refresh_seconds = 0: every request sees each change committed before it.
    callers = asyncio.run(arrive(ApiKeyCache(ttl_seconds=0.0), SharedReads(), 5))
    assert len(callers) == 5
    assert keys.lookups == 5


def test_after_a_failed_lookup_the_others_look_up_their_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    slow = SlowKeys(fail_first=True)
    monkeypatch.setattr(deps, "_load_caller", slow)
    outcomes = asyncio.run(arrive(ApiKeyCache(), SharedReads(), 6))
    assert isinstance(outcomes[0], ConnectionError)  # the reader's own request fails
    assert [caller.name for caller in outcomes[1:]] == ["shop"] * 5


def test_an_entry_due_for_refresh_is_reloaded_by_one_request_while_others_use_it(
        keys: SlowKeys) -> None:
    cache, reads = ApiKeyCache(ttl_seconds=0.5, refresh_after=0.1), SharedReads()

    async def scenario() -> tuple[float, list[Any], float]:
        await deps._lookup(request(cache, reads), session, SECRET)  # cached
        await asyncio.sleep(0.1)  # past a tenth of its life: due for a refresh
        refresher = asyncio.create_task(deps._lookup(request(cache, reads), session, SECRET))
        await asyncio.sleep(0.01)  # the refresher is looking it up, on its thread
        started = time.monotonic()
        others = await arrive(cache, reads, 10)
        waited = time.monotonic() - started
        await refresher
        return waited, others, time.monotonic() - started

    waited, others, total = asyncio.run(scenario())
    assert [caller.name for caller in others] == ["shop"] * 10
    assert waited < keys.seconds / 2 < total  # they did not wait for the refresh
    assert keys.lookups == 2  # the first and the one refresh


def test_a_failed_refresh_keeps_the_entry_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    # The database went away while the entry was still valid: the request that refreshes
    # it is answered from the entry, and a later request tries the refresh again.
    slow = SlowKeys(seconds=0.0, fail_on=2)
    monkeypatch.setattr(deps, "_load_caller", slow)
    cache, reads = ApiKeyCache(ttl_seconds=0.5, refresh_after=0.1), SharedReads()

    async def scenario() -> list[Any]:
        await deps._lookup(request(cache, reads), session, SECRET)
        await asyncio.sleep(0.06)
        refreshing = await deps._lookup(request(cache, reads), session, SECRET)  # fails
        retrying = await deps._lookup(request(cache, reads), session, SECRET)
        return [refreshing, retrying]

    callers = asyncio.run(scenario())
    assert [caller.name for caller in callers] == ["shop", "shop"]
    assert slow.lookups == 3  # the first, the failed refresh, the retry


def test_a_refreshed_entry_lives_a_whole_life_again(keys: SlowKeys) -> None:
    cache, reads = ApiKeyCache(ttl_seconds=0.4, refresh_after=0.1), SharedReads()

    async def scenario() -> None:
        await deps._lookup(request(cache, reads), session, SECRET)
        await asyncio.sleep(0.06)
        await deps._lookup(request(cache, reads), session, SECRET)  # refreshes
        await asyncio.sleep(0.3)  # past the first entry's life, inside the refreshed one's
        hit, _, _ = cache.get(SECRET, epoch=3)
        assert hit

    keys.seconds = 0.0
    asyncio.run(scenario())
    assert keys.lookups == 2


def test_a_lookup_begun_before_the_epoch_moved_is_not_kept() -> None:
    # A key revoked while its lookup was under way: the epoch moved, and what the lookup
    # found (the key still valid) must not be cached as if it were current.
    cache = ApiKeyCache()
    shop = Caller(api_key_id=1, name="shop", scope=ApiScope.STOREFRONT)
    assert cache.get(SECRET, epoch=3) == (False, None, False)
    cache.get("another", epoch=4)  # a request saw the new epoch meanwhile
    cache.put(SECRET, shop, epoch=3)
    assert cache.get(SECRET, epoch=4) == (False, None, False)
    cache.put(SECRET, shop, epoch=4)
    assert cache.get(SECRET, epoch=4) == (True, shop, False)


def test_an_unknown_key_is_cached_too(keys: SlowKeys, monkeypatch: pytest.MonkeyPatch
                                      ) -> None:
    # A client retrying with a wrong key costs one lookup per life of the entry, not one
    # per request.
    monkeypatch.setattr(deps, "_load_caller", lambda session, secret: None)
    cache, reads = ApiKeyCache(), SharedReads()
    assert asyncio.run(arrive(cache, reads, 3)) == [None] * 3
    assert cache.get(SECRET, epoch=3) == (True, None, False)
