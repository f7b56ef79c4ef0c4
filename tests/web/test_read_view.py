"""``web.deps.read_view``: the long reads of a request (reports, economics, headlines)
hold nothing writers wait for, and see one state of the database.

On SQLite every transaction that may write begins IMMEDIATE and holds the write lock to
its end; a request whose session had looked up its API key kept that lock for as long as
its report ran. Committed data in a scratch database: the subject opens its own
connections.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from campaigns.models import Assignment, Channel
from campaigns.services.campaigns import campaign_arms
from campaigns.services.channels import create_channel
from campaigns.services.coupons import audience_rows
from tests.builders import make_customer, make_goal, make_running_campaign
from tests.scratch import scratch_database
from web.api.management.common import streamed
from web.deps import read_view


@pytest.fixture(scope="module")
def scratch_engine(database: tuple[str, str | None], tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[Engine]:
    with scratch_database(database, tmp_path_factory.mktemp("read_view"),
                          prefix="cs_read_view") as scratch:
        yield scratch.engine


def channels(connection: object) -> int:
    return int(connection.execute(  # type: ignore[attr-defined]
        select(func.count()).select_from(Channel)).scalar_one())


def add_channel(engine: Engine, key: str) -> None:
    with Session(engine) as session:
        create_channel(session, channel_create={"key": key, "name": key, "kind": "web"},
                       actor="test")
        session.commit()


def test_the_request_so_far_is_committed_and_writers_go_on(scratch_engine: Engine) -> None:
    written = threading.Event()

    def write() -> None:
        add_channel(scratch_engine, "during")
        written.set()

    with Session(scratch_engine) as session:
        add_channel(scratch_engine, "before")
        # What a request did before its report (the API key lookup): on SQLite this
        # transaction holds the write lock.
        session.exec(select(Channel)).all()
        assert session.in_transaction()
        with read_view(session) as view:
            assert not session.in_transaction()
            seen = channels(view)
            writer = threading.Thread(target=write)
            writer.start()
            writer.join(timeout=10)
            assert written.is_set(), "the writer waited for the read view"
            assert channels(view) == seen  # one state for every statement of the view
        with read_view(session) as view:
            assert channels(view) == seen + 1


def test_a_session_on_a_callers_connection_is_read_there(scratch_engine: Engine) -> None:
    """A session bound to a connection reads on it, its uncommitted work included."""
    with scratch_engine.connect() as connection:
        outer = connection.begin()
        session = Session(bind=connection)
        create_channel(session, channel_create={"key": "uncommitted", "name": "u",
                                                "kind": "web"}, actor="test")
        session.flush()
        with read_view(session) as view:
            assert view is session.connection()
            assert view.execute(select(Channel.key).where(Channel.key == "uncommitted")
                                ).scalar_one() == "uncommitted"
        session.close()
        outer.rollback()


def test_a_failed_read_ends_its_view(scratch_engine: Engine) -> None:
    with Session(scratch_engine) as session, pytest.raises(ZeroDivisionError), \
            read_view(session):
        raise ZeroDivisionError
    add_channel(scratch_engine, "after_failure")  # nothing left holding a lock


def test_a_streamed_export_keeps_no_writer_waiting(scratch_engine: Engine) -> None:
    """The audience download streams for as long as the client reads: meanwhile offers,
    redemptions and events must go on, and the file is one state of the database."""
    with Session(scratch_engine, expire_on_commit=False) as session:
        campaign = make_running_campaign(session, name="Export while writing",
                                         goal=make_goal(session, name="Export goal"))
        arm = campaign_arms(session, campaign)[0]
        for number in (1, 2):
            customer = make_customer(session, external_id=f"EXPORT{number}")
            session.add(Assignment(campaign_id=campaign.id, customer_id=customer.id,
                                   arm_id=arm.id))
        session.commit()
    written = threading.Event()

    def write() -> None:
        add_channel(scratch_engine, "during_export")
        written.set()

    with Session(scratch_engine, expire_on_commit=False) as session:
        # The request's API key lookup: on SQLite this transaction holds the write lock.
        session.exec(select(Channel)).all()
        rows = streamed(session, lambda view: audience_rows(view, campaign=campaign,
                                                            batch_size=1))
        first = next(rows)
        writer = threading.Thread(target=write)
        writer.start()
        writer.join(timeout=10)
        assert written.is_set(), "the writer waited for the export"
        assert [first.external_id, *(row.external_id for row in rows)] == ["EXPORT1",
                                                                           "EXPORT2"]
