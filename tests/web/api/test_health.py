"""Liveness and readiness probes, and refusing to start on an old schema."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from campaigns import migrate
from campaigns.db import build_engine
from campaigns.errors import SchemaOutOfDate
from web.app import create_app


class TestProbes:
    def test_healthz(self, engine) -> None:
        with TestClient(create_app(engine=engine)) as client:
            assert client.get("/healthz").json() == {"status": "ok"}

    def test_readyz_on_current_schema(self, engine, backend) -> None:
        with TestClient(create_app(engine=engine)) as client:
            response = client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {"status": "ready", "database": backend}

    def test_readyz_on_empty_database(self, tmp_path) -> None:
        empty = build_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
        with TestClient(create_app(engine=empty, check_schema=False)) as client:
            response = client.get("/readyz")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert "channelshift db upgrade" in response.json()["reason"]

    def test_readyz_when_database_unreachable(self) -> None:
        gone = build_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
        with TestClient(create_app(engine=gone, check_schema=False)) as client:
            response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["reason"].startswith("database unreachable")


class TestStartup:
    def test_app_refuses_to_start_on_out_of_date_schema(self, tmp_path) -> None:
        stale = build_engine(f"sqlite:///{tmp_path / 'stale.sqlite3'}")
        with (pytest.raises(SchemaOutOfDate, match="run `channelshift db upgrade`"),
              TestClient(create_app(engine=stale))):
            pass
        migrate.upgrade(stale)
        with TestClient(create_app(engine=stale)) as client:
            assert client.get("/readyz").status_code == 200
