"""A TCP proxy in front of PostgreSQL that a test can cut and restore: a database outage on cue.

The server under test connects to the proxy instead of PostgreSQL. :meth:`PgProxy.cut`
closes every live connection at once (what clients see when the database crashes or
restarts, or a network link drops) and then either refuses new connections (they are
closed as soon as they arrive: a database that is down) or blackholes them (they are
accepted and never answered: a database host that does not respond, which only a connect
timeout ends). :meth:`PgProxy.restore` lets new connections through again; those that were
blackholed stay unanswered, as packets lost during an outage are, so only the client's own
connect timeout ends them.

The proxy runs its own asyncio loop in a daemon thread, so the test's own code (which may
run its own loop for the HTTP load) drives it with plain blocking calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["forward", "refuse", "blackhole"]

CHUNK = 64 * 1024


@dataclass
class ProxyCounts:
    """What the proxy saw, for the test's summary line."""

    forwarded: int = 0  # connections passed through to PostgreSQL
    refused: int = 0  # connections closed on arrival while cut
    blackholed: int = 0  # connections held unanswered while cut
    cut_live: int = 0  # live connections closed by cut()
    cuts: int = 0


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class PgProxy:
    """Forwards 127.0.0.1:<port> to ``upstream``; see the module docstring."""

    def __init__(self, upstream_host: str = "127.0.0.1", upstream_port: int = 5432) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = 0
        self.mode: Mode = "forward"
        self.counts = ProxyCounts()
        self._links: set[_Link] = set()
        self._held: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="pgproxy",
                                        daemon=True)

    # --- control, from the test's thread ----------------------------------------------

    def start(self) -> PgProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self, mode: Literal["refuse", "blackhole"] = "refuse") -> int:
        """Close every live connection and treat new ones per ``mode``; returns how many."""
        return int(self._call(self._cut(mode)))

    def restore(self) -> None:
        """Pass new connections through again (blackholed ones stay unanswered)."""
        self._call(self._restore())

    def live_connections(self) -> int:
        return int(self._call(self._count()))

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> PgProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    # --- the loop's side ---------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _count(self) -> int:
        return len(self._links)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        if self.mode == "refuse":
            self.counts.refused += 1
            _abort(writer)
            return
        if self.mode == "blackhole":
            self.counts.blackholed += 1
            self._held.add(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host,
                                                                 self.upstream_port)
        except OSError:
            _abort(writer)
            return
        if self.mode != "forward":  # cut while we were connecting upstream
            _abort(writer)
            _abort(up_writer)
            return
        self.counts.forwarded += 1
        link = _Link(client=writer, upstream=up_writer)
        self._links.add(link)
        link.tasks = [asyncio.create_task(self._pipe(reader, up_writer, link)),
                      asyncio.create_task(self._pipe(up_reader, writer, link))]

    async def _pipe(self, source: asyncio.StreamReader, target: asyncio.StreamWriter,
                    link: _Link) -> None:
        try:
            while data := await source.read(CHUNK):
                target.write(data)
                await target.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side ended: end the other too, as a real connection would.
            self._close_link(link)

    def _close_link(self, link: _Link) -> None:
        if link in self._links:
            self._links.discard(link)
            _abort(link.client)
            _abort(link.upstream)

    async def _cut(self, mode: Literal["refuse", "blackhole"]) -> int:
        self.mode = mode
        self.counts.cuts += 1
        links = list(self._links)
        for link in links:
            self._close_link(link)
        self.counts.cut_live += len(links)
        return len(links)

    async def _restore(self) -> None:
        self.mode = "forward"

    async def _shutdown(self) -> None:
        await self._cut("refuse")
        for writer in list(self._held):
            _abort(writer)
        self._held.clear()
        if self._server is not None:
            self._server.close()
            with suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=5)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close at once, with a reset: no graceful goodbye from a crashed database."""
    with suppress(Exception):
        writer.transport.abort()
