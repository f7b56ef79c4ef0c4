"""The command line, run as a user runs it: a separate process on a fresh database."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text

from campaigns import migrate
from campaigns.db import build_engine
from tests.scratch import empty_schema

pytestmark = pytest.mark.slow


@pytest.fixture
def cli_env(database, tmp_path) -> Iterator[dict[str, str]]:
    """Environment for a `channelshift` process on an empty database of this run's backend."""
    url, _ = database
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANNELSHIFT_")}
    env["CHANNELSHIFT_DATA_DIR"] = str(tmp_path / "data")
    env["COLUMNS"] = "300"  # keep rich from wrapping lines the assertions read
    with empty_schema(url, prefix="cs_cli") as schema:
        if schema is not None:
            env |= {"CHANNELSHIFT_DATABASE_URL": url, "CHANNELSHIFT_DATABASE_SCHEMA": schema}
        yield env


def run(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "web.cli", *args], env=env, text=True,
                            capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def count(env: dict[str, str], table: str) -> int:
    from campaigns.settings import Settings

    settings = Settings(data_dir=env["CHANNELSHIFT_DATA_DIR"],
                        database_url=env.get("CHANNELSHIFT_DATABASE_URL"),
                        database_schema=env.get("CHANNELSHIFT_DATABASE_SCHEMA"))
    engine = build_engine(settings.resolved_database_url, schema=settings.database_schema)
    try:
        with engine.connect() as connection:
            return connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TestDb:
    def test_upgrade_twice_is_a_no_op(self, cli_env) -> None:
        first = run(cli_env, "db", "upgrade")
        head = migrate.head_revision()
        assert f"upgraded empty -> {head}" in first.stdout
        second = run(cli_env, "db", "upgrade")
        assert f"already at revision {head}" in second.stdout
        assert "current" in run(cli_env, "db", "current").stdout

    def test_serve_refuses_an_empty_database(self, cli_env) -> None:
        result = run(cli_env, "serve", "--port", str(free_port()), check=False)
        assert result.returncode == 1
        assert "channelshift db upgrade" in result.stderr


class TestUser:
    def test_create_user(self, cli_env) -> None:
        run(cli_env, "db", "upgrade")
        result = run(cli_env, "user", "create", "alice", "--role", "admin",
                     "--password", "correct horse battery")
        assert "created admin 'alice'" in result.stdout
        assert count(cli_env, "app_user") == 1

    def test_short_password_refused(self, cli_env) -> None:
        run(cli_env, "db", "upgrade")
        result = run(cli_env, "user", "create", "bob", "--role", "viewer", "--password", "short",
                     check=False)
        assert result.returncode == 1
        assert "password" in result.stderr
        assert count(cli_env, "app_user") == 0

    def test_no_password_without_a_terminal(self, cli_env) -> None:
        run(cli_env, "db", "upgrade")
        result = run(cli_env, "user", "create", "carol", "--role", "viewer", check=False)
        assert result.returncode == 1
        assert "no password" in result.stderr


class TestDemo:
    def test_seeds_once_and_serves(self, cli_env) -> None:
        first = run(cli_env, "demo", "--no-serve", "--customers", "1000")
        assert "login:" in first.stdout and "demo /" in first.stdout
        customers = count(cli_env, "customer")
        events = count(cli_env, "channel_event")
        campaigns = count(cli_env, "campaign")
        assert (customers, campaigns) == (1000, 3)
        second = run(cli_env, "demo", "--no-serve", "--customers", "1000")
        assert "already seeded" in second.stdout
        assert (count(cli_env, "customer"), count(cli_env, "channel_event"),
                count(cli_env, "campaign"), count(cli_env, "app_user")) == (
                    customers, events, campaigns, 1)
        # each run prints a fresh working password
        assert first.stdout.split("demo /")[1].split()[0] != \
            second.stdout.split("demo /")[1].split()[0]

        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "demo", "--port", str(port), "--customers", "1000"],
            env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise
                    time.sleep(0.3)
            assert response.status_code == 200
            assert response.json()["status"] == "ready"
        finally:
            server.terminate()
            output = server.communicate(timeout=30)[0]
        assert f"http://127.0.0.1:{port}/" in output
        # The server logs JSON lines: uvicorn's own, and one access line per request with
        # its request id (uvicorn's plain access log is off).
        lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        readyz = [line for line in lines if line.get("route") == "/readyz"]
        assert readyz and readyz[0]["status"] == 200 and len(readyz[0]["request_id"]) == 16
        assert any(line["logger"].startswith("uvicorn") for line in lines)
        assert "GET /readyz HTTP/1.1" not in output
        assert count(cli_env, "customer") == customers
