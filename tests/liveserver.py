"""A real ChannelShift server (uvicorn, several worker processes) on a fresh PostgreSQL schema.

Used by the concurrency and reliability tests: requests cross process boundaries and hit a
real connection pool, so invariants are enforced by the database or not at all.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import Engine

from tests.scratch import scratch_database

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    engine: Engine
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    workers: int = 2

    def start(self) -> None:
        """Start uvicorn (a master and its workers in a process group of their own) and wait
        until it answers /readyz."""
        with open(Path(self.env["CHANNELSHIFT_DATA_DIR"]) / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "web.app:create_app", "--factory",
                 "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", str(self.workers), "--no-access-log", "--log-level", "warning"],
                env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}; "
                                   f"see {self.env['CHANNELSHIFT_DATA_DIR']}/server.log")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become ready in 60 s")

    def processes(self) -> list[int]:
        """The live processes of the server's group: the uvicorn master and its workers."""
        if self.process is None:
            return []
        return group_members(self.process.pid)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the whole process group (``SIGKILL``: a crash, nothing is flushed or
        closed) and wait until no process of it is left, so a restart finds the port free
        and no old worker still answering."""
        if self.process is None:
            return
        group = self.process.pid
        with suppress(ProcessLookupError):
            os.killpg(group, sig)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            self.process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while group_members(group):
            if time.monotonic() > deadline:
                with suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
                raise RuntimeError(f"processes {group_members(group)} of the server outlived "
                                   "its master")
            time.sleep(0.05)
        self.process = None

    def restart(self, sig: int = signal.SIGKILL) -> None:
        """Stop every server process with ``sig`` (by default: kill -9, a crash) and start
        a new server on the same schema and port."""
        self.stop(sig)
        self.start()


def group_members(group: int) -> list[int]:
    """Pids of the running (not zombie) processes in process group ``group`` (Linux /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == group:
            members.append(int(entry.name))
    return members


@contextmanager
def live_server(database_url: str, data_dir: Path, *, workers: int = 2, start: bool = True
                ) -> Iterator[LiveServer]:
    """Start a server on a scratch database of ``database_url``'s backend (a new schema on
    PostgreSQL, a file in ``data_dir`` on SQLite); drop it afterwards.

    With ``start=False`` the schema is migrated but the server not started: the caller
    sets up its data first (the workers then load it at start, no waiting for their
    configuration refresh) and calls :meth:`LiveServer.start` itself.
    """
    with scratch_database((database_url, None), data_dir, prefix="cs_live",
                          pool_size=5) as scratch:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHANNELSHIFT_")}
        env |= {
            "CHANNELSHIFT_DATABASE_URL": scratch.url,
            **({"CHANNELSHIFT_DATABASE_SCHEMA": scratch.schema} if scratch.schema else {}),
            "CHANNELSHIFT_DATA_DIR": str(data_dir),
            "CHANNELSHIFT_CONFIG_REFRESH_SECONDS": "0.2",
            "CHANNELSHIFT_DATABASE_POOL_SIZE": "10",
            # Tests that want the lifecycle scheduler turn it on themselves.
            "CHANNELSHIFT_SCHEDULER": "false",
            "CHANNELSHIFT_GUARDRAIL_INTERVAL_SECONDS": "0",
        }
        server = LiveServer(url=f"http://127.0.0.1:{port}", engine=scratch.engine, env=env,
                            port=port, workers=workers)
        try:
            if start:
                server.start()
            yield server
        finally:
            server.stop()
