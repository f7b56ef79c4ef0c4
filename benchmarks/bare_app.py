"""The baselines: a FastAPI app with a constant JSON endpoint and a one-INSERT endpoint."""

from __future__ import annotations

import secrets

from fastapi import FastAPI
from sqlalchemy import text

from campaigns.db import get_engine

CONSTANT = {"customer_id": "C1", "offers": [{"campaign_id": 1, "title": "10% off"}]}


def create_app() -> FastAPI:
    app = FastAPI()
    engine = get_engine()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/bare/{customer_id}")
    def bare(customer_id: str) -> dict[str, object]:
        return CONSTANT

    @app.post("/bare-insert")
    def bare_insert() -> dict[str, str]:
        key = secrets.token_hex(16)
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO bench_row (key) VALUES (:key)"), {"key": key})
        return {"key": key}

    return app
