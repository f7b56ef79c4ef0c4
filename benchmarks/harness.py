"""Shared pieces of the benchmarks: a fresh PostgreSQL schema, a uvicorn server, load.

Throughput is measured with wrk (Debian package ``wrk``, installed on first use) from a
separate process; latency at a fixed request rate with an open-loop asyncio client in a
separate process, so a slow server cannot slow down the arrivals it is measured against.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Connection, Engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from campaigns import migrate  # noqa: E402
from campaigns.db import build_engine, create_marked_schema, drop_stale_schemas  # noqa: E402
from web import observability  # noqa: E402

#: A benchmark takes minutes: a marked schema this old was left by a killed one.
STALE_AFTER = timedelta(hours=6)

DATABASE_URL = os.environ.get("CHANNELSHIFT_BENCH_DATABASE_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def create_benchmark_schema(connection: Connection, schema: str) -> None:
    """Create ``schema``, marked as a benchmark's. A benchmark killed before it could drop
    its schema (a million customers) left it marked: the next benchmark drops it once it
    is surely not a running one's."""
    drop_stale_schemas(connection, kind="benchmark", older_than=STALE_AFTER)
    create_marked_schema(connection, schema, kind="benchmark")


@contextmanager
def fresh_schema(prefix: str) -> Iterator[tuple[Engine, str]]:
    schema = f"{prefix}_{secrets.token_hex(4)}"
    admin = build_engine(DATABASE_URL)
    with admin.begin() as connection:
        create_benchmark_schema(connection, schema)
    engine = build_engine(DATABASE_URL, schema=schema, pool_size=5)
    try:
        migrate.upgrade(engine)
        yield engine, schema
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


def settle(engine: Engine) -> None:
    """Write out what the last phase left dirty before the next one is measured.

    PostgreSQL's ``CHECKPOINT`` writes its dirty buffers and syncs the files its backends
    wrote; ``sync`` flushes the rest (the server's log). Left to the kernel, a phase's
    writes are flushed about 30 s later, in the middle of the next phase, and on a shared
    disk that flush holds every commit's WAL flush, and the requests waiting on them, for
    up to a second at a time: it was most of the latency a paced run measured right after
    a maximum-throughput run (see docs/PERFORMANCE.md).
    """
    with engine.connect() as connection:
        connection.execute(text("CHECKPOINT"))
    os.sync()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: The process group of each running server, by base URL (see :func:`cpu_seconds`).
SERVER_GROUPS: dict[str, int] = {}


def _cpu_of(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _processes() -> list[tuple[int, str, int]]:
    """(pid, command name, process group) of every process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                head, tail = stat.read().rsplit(")", 1)
        except (FileNotFoundError, ProcessLookupError):
            continue
        found.append((int(entry), head.partition("(")[2], int(tail.split()[2])))
    return found


def cpu_seconds(url: str) -> tuple[float, float]:
    """CPU seconds used so far by the server at ``url`` (all its processes) and by
    PostgreSQL's processes (the whole local server: nothing else should be using it)."""
    processes = _processes()
    group = SERVER_GROUPS[url]
    return (_cpu_of([pid for pid, _, pgrp in processes if pgrp == group]),
            _cpu_of([pid for pid, name, _ in processes if name == "postgres"]))


@contextmanager
def server(app: str, *, schema: str, workers: int, extra_env: dict[str, str] | None = None
           ) -> Iterator[str]:
    """Run ``uvicorn <app> --factory`` and yield its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANNELSHIFT_")}
    data_dir = tempfile.mkdtemp(prefix="cs-bench-")
    env |= {"CHANNELSHIFT_DATABASE_URL": DATABASE_URL, "CHANNELSHIFT_DATABASE_SCHEMA": schema,
            "CHANNELSHIFT_DATA_DIR": data_dir, "PYTHONPATH": str(ROOT),
            "CHANNELSHIFT_DATABASE_POOL_SIZE": "10", **(extra_env or {})}
    # Logging as `channelshift serve` sets it up: JSON lines, ChannelShift's access log
    # (one line per request) instead of uvicorn's, written to a file in the data directory.
    log_config = Path(data_dir) / "log-config.json"
    log_config.write_text(json.dumps(observability.log_config()))
    log = open(Path(data_dir) / "server.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--factory", "--host", "127.0.0.1", "--port",
         str(port), "--workers", str(workers), "--no-access-log", "--log-config",
         str(log_config)],
        env=env, cwd=ROOT, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    log.flush()
                    tail = (Path(data_dir) / "server.log").read_text()[-2000:]
                    raise RuntimeError(f"{app} did not start:\n{tail}") from None
                time.sleep(0.2)
        SERVER_GROUPS[url] = process.pid  # start_new_session: its own process group
        yield url
    finally:
        SERVER_GROUPS.pop(url, None)
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                   stdout=subprocess.DEVNULL)
    return shutil.which("wrk") or "wrk"


@dataclass(frozen=True)
class LoadResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    #: CPU per request of the server's processes and of PostgreSQL's, in milliseconds
    #: (measured by :func:`wrk` for a server started by :func:`server`). Less noisy than
    #: throughput on a shared machine: neighbours take time, not work.
    server_cpu_ms: float | None = None
    database_cpu_ms: float | None = None


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, *, lua: str, seconds: int = 15, connections: int = 64,
        threads: int = 2) -> LoadResult:
    """Closed-loop maximum throughput with wrk running the given Lua request script."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    before = cpu_seconds(url) if url in SERVER_GROUPS else None
    output = subprocess.run(
        [ensure_wrk(), "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
         "--latency", "-s", script.name, url], capture_output=True, text=True, check=True
    ).stdout
    os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = int(bad.group(1)) if bad else 0
    if before is None or not total:
        return LoadResult(rps, p50, p99, total, errors)
    after = cpu_seconds(url)
    return LoadResult(rps, p50, p99, total, errors,
                      server_cpu_ms=(after[0] - before[0]) * 1000 / total,
                      database_cpu_ms=(after[1] - before[1]) * 1000 / total)


def interleaved(targets: list[tuple[str, str]], *, rounds: int = 3, seconds: int = 5
                ) -> list[LoadResult]:
    """Maximum throughput of each (url, Lua script) target, measured in turns: ``rounds``
    runs of ``seconds`` each, target after target.

    On a shared machine the capacity left to a benchmark changes from one minute to the
    next (neighbours' work, the disk's writeback). One long run of each target, one after
    the other, puts all of a bad minute on one side of their ratio; short runs in turns
    share the good and the bad moments between them. Each target's result is its requests
    over its time in all rounds; its latencies are those of its median round.
    """
    runs: list[list[LoadResult]] = [[] for _ in targets]
    for _ in range(rounds):
        for results, (url, lua) in zip(runs, targets, strict=True):
            results.append(wrk(url, lua=lua, seconds=seconds))
    return [_combined(results) for results in runs]


def _combined(runs: list[LoadResult]) -> LoadResult:
    requests = sum(run.requests for run in runs)
    seconds = sum(run.requests / run.requests_per_second for run in runs)

    def per_request(values: list[float | None]) -> float | None:
        if any(value is None for value in values):
            return None
        return sum(value * run.requests  # type: ignore[operator]
                   for value, run in zip(values, runs, strict=True)) / requests

    return LoadResult(requests / seconds, statistics.median(run.p50_ms for run in runs),
                      statistics.median(run.p99_ms for run in runs), requests,
                      sum(run.errors for run in runs),
                      server_cpu_ms=per_request([run.server_cpu_ms for run in runs]),
                      database_cpu_ms=per_request([run.database_cpu_ms for run in runs]))


PACED_CLIENT = r'''
import asyncio, gc, json, random, sys, time
from urllib.parse import urlsplit

import uvloop

# Keep-alive HTTP/1.1 over plain asyncio streams: a request is a few bytes written and a
# response is read by its Content-Length, so the client costs far less CPU than the server
# it measures (an HTTP library in Python costs about as much as the server's own work, and
# on a machine shared with the server that cost shows up as server latency).
#
# The client must not pause either: every pause of its event loop is added to the latency
# of each response that arrives meanwhile. The collector is off (a run keeps a few tens of
# thousands of small objects; collecting them as they piled up paused the loop for tens of
# milliseconds, most of a second's slow requests in a run), and a finished request leaves
# nothing behind but its latency (a gather of every task at the end, built while the last
# responses arrived, was another pause).
gc.disable()


async def main(url_template, headers, rate, seconds, id_range, connections):
    parts = urlsplit(url_template)
    path_template = parts.path + ("?" + parts.query if parts.query else "")
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    idle = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await asyncio.open_connection(parts.hostname, parts.port))
    latencies, errors = [], 0

    async def one(scheduled):
        nonlocal errors
        # Latency counts from the moment the request was due, waiting for a free connection
        # included: a slow server cannot hide its queue by slowing down the arrivals.
        reader, writer = await idle.get()
        path = path_template.format(random.randint(*id_range))
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{head}\r\n"
                         .encode())
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            if int(status_line.split()[1]) >= 400:
                errors += 1
            idle.put_nowait((reader, writer))
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            errors += 1
            writer.close()
            idle.put_nowait(await asyncio.open_connection(parts.hostname, parts.port))
        latencies.append((time.perf_counter() - scheduled) * 1000)

    running, done = set(), asyncio.Event()

    def finished(task):
        running.discard(task)
        if not running and scheduling_over:
            done.set()

    scheduling_over, start = False, time.perf_counter()
    for i in range(int(rate * seconds)):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(scheduled))
        running.add(task)
        task.add_done_callback(finished)
    scheduling_over = True
    if running:
        await done.wait()
    print(json.dumps({"latencies": latencies, "errors": errors,
                      "seconds": time.perf_counter() - start}))

uvloop.run(main(**json.loads(sys.argv[1])))
'''


def paced(url_template: str, *, headers: dict[str, str], rate: float, seconds: int,
          id_range: tuple[int, int], connections: int = 64) -> LoadResult:
    """Open-loop load at ``rate`` requests per second from a second process, over
    ``connections`` keep-alive connections (as many as wrk's closed loop uses). For a
    server started by :func:`server`, the CPU per request is measured too: at a moderate
    rate it is not what it is at the maximum."""
    parts = urlsplit(url_template)
    url = f"{parts.scheme}://{parts.netloc}"
    args = json.dumps({"url_template": url_template, "headers": headers, "rate": rate,
                       "seconds": seconds, "id_range": list(id_range),
                       "connections": connections})
    before = cpu_seconds(url) if url in SERVER_GROUPS else None
    output = subprocess.run([sys.executable, "-c", PACED_CLIENT, args], capture_output=True,
                            text=True, check=True).stdout
    result = json.loads(output)
    latencies = sorted(result["latencies"])
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    measured = LoadResult(len(latencies) / result["seconds"], statistics.median(latencies),
                          p99, len(latencies), result["errors"])
    if before is None or not latencies:
        return measured
    after = cpu_seconds(url)
    return replace(measured, server_cpu_ms=(after[0] - before[0]) * 1000 / len(latencies),
                   database_cpu_ms=(after[1] - before[1]) * 1000 / len(latencies))
