"""Whether a large JSON body has a shape worth parsing in a server process.

Python's JSON parser holds the interpreter for the whole parse: a 12 MB object of a million
keys kept every other request of its worker waiting for seconds, whatever thread parsed it.
A body larger than :data:`INLINE_BYTES` is therefore first parsed in a process of its own
(one per server process, started when first needed), which answers only whether the body
stays within the shape given (members per object, items per array, depth, values in all).
The route then parses a body known to be bounded, and the worker never stalls on one that
is not. This module imports nothing of the application, so that process starts quickly.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from typing import Any

#: Bodies up to this size are parsed by the route directly: the worst shape of this many
#: bytes parses in a few tens of milliseconds.
INLINE_BYTES = 256 * 1024


@dataclass(frozen=True)
class Shape:
    """The most a body may hold: members of one object, items of one array, nesting depth,
    values in all."""

    members: int
    items: int
    depth: int
    values: int


@dataclass(frozen=True)
class Refusal:
    """Why a body is refused: it is not JSON (``invalid_json``) or too big a shape."""

    invalid_json: bool
    message: str


def shape_problem(body: bytes, shape: Shape) -> Refusal | None:
    """What makes ``body`` exceed ``shape`` (or not JSON at all), or None if it does not."""
    try:
        data = json.loads(body)
    except RecursionError:
        return Refusal(False, "the JSON is nested too deeply")
    except ValueError as error:
        return Refusal(True, f"not valid JSON: {error}")
    problem = _exceeds(data, shape)
    return None if problem is None else Refusal(False, problem)


def _exceeds(data: Any, shape: Shape) -> str | None:
    values = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        values += 1
        if values > shape.values:
            return f"more than {shape.values:,} values"
        if isinstance(node, dict | list) and depth > shape.depth:
            return f"nested deeper than {shape.depth} levels"
        if isinstance(node, dict):
            if len(node) > shape.members:
                return f"an object of {len(node):,} members (at most {shape.members})"
            stack.extend((item, depth + 1) for item in node.values())
        elif isinstance(node, list):
            if len(node) > shape.items:
                return f"an array of {len(node):,} items (at most {shape.items:,})"
            stack.extend((item, depth + 1) for item in node)
    return None


_checker: ProcessPoolExecutor | None = None
_starting = threading.Lock()


def _started() -> ProcessPoolExecutor:
    """The checking process, started if need be (on a thread: starting it takes a while)."""
    global _checker
    with _starting:
        if _checker is not None:
            return _checker
        # Spawned, not forked: the server process has threads and an event loop.
        checker = ProcessPoolExecutor(max_workers=1,
                                      mp_context=multiprocessing.get_context("spawn"))
        checker.submit(int).result()
        _checker = checker
        return checker


async def body_problem(body: bytes, shape: Shape) -> Refusal | None:
    """:func:`shape_problem` for ``body``: in the checking process if the body is larger
    than :data:`INLINE_BYTES`, else None at once (the route's own parse is quick)."""
    global _checker
    if len(body) <= INLINE_BYTES:
        return None
    loop = asyncio.get_running_loop()
    try:
        checker = _checker or await loop.run_in_executor(None, _started)
        return await loop.run_in_executor(checker, partial(shape_problem, body, shape))
    except BrokenProcessPool:
        # The checking process died (out of memory on this body, say): the next body gets
        # a new one, and this one is not parsed here either.
        _checker = None
        return Refusal(False, "the body could not be checked")
