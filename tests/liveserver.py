"""A real ChannelShift server (uvicorn, several worker processes) on a fresh PostgreSQL schema.

Used by the concurrency and reliability tests: requests cross process boundaries and hit a
real connection pool, so invariants are enforced by the database or not at all.
"""

from __future__ import annotations

import os
import secrets
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
from sqlalchemy import Engine, text

from campaigns import migrate
from campaigns.db import build_engine

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
        log = open(Path(self.env["CHANNELSHIFT_DATA_DIR"]) / "server.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "web.app:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
             "--no-access-log", "--log-level", "warning"],
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

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None


@contextmanager
def live_server(database_url: str, data_dir: Path, *, workers: int = 2
                ) -> Iterator[LiveServer]:
    """Start a server on a new schema of ``database_url``; drop the schema afterwards."""
    schema = f"cs_live_{secrets.token_hex(4)}"
    admin = build_engine(database_url)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    engine = build_engine(database_url, schema=schema, pool_size=5)
    migrate.upgrade(engine)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANNELSHIFT_")}
    env |= {
        "CHANNELSHIFT_DATABASE_URL": database_url,
        "CHANNELSHIFT_DATABASE_SCHEMA": schema,
        "CHANNELSHIFT_DATA_DIR": str(data_dir),
        "CHANNELSHIFT_CONFIG_REFRESH_SECONDS": "0.2",
        "CHANNELSHIFT_DATABASE_POOL_SIZE": "10",
        # Tests that want the guardrail scheduler turn it on themselves.
        "CHANNELSHIFT_GUARDRAIL_INTERVAL_SECONDS": "0",
    }
    server = LiveServer(url=f"http://127.0.0.1:{port}", engine=engine, env=env, port=port,
                        workers=workers)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()
