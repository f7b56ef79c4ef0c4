"""Assignments keep their campaign, arm and channel by trigger, not by foreign key

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24

Every offers request inserts its customer's first exposures into `assignment` (or finds
them there: `ON CONFLICT DO NOTHING` checks the row first). With foreign keys to `campaign`,
`arm` and `channel`, PostgreSQL ran three referential checks per row, each a query that
locks the parent row `FOR KEY SHARE`. Those parents are a few hundred rows that every
concurrent request locks at once, which makes the locks shared by many transactions
(multixacts). On the offers benchmark (100 running campaigns, two workers) those checks
cost a sixth to a third of PostgreSQL's CPU per request.

The keys go; what they did on delete stays, done by triggers:

- deleting a campaign or an arm deletes its assignments (was `ON DELETE CASCADE`);
- deleting a channel clears the exposure channel of its assignments (was `SET NULL`).

What they checked on insert is kept by the lifecycle instead: assignments are written only
for the arms of running campaigns, read from the configuration of running campaigns, and
a campaign that has run is never deleted or returned to draft (only drafts lose arms or
are deleted; channels are never deleted). A check on insert by trigger was measured too:
it cost as much as the foreign keys.

On SQLite the table is rebuilt without the keys. A later migration that rebuilds
`assignment` there must drop these triggers first and create them again after: SQLite
refuses to rename a table while a trigger names a table that is missing.
"""

from __future__ import annotations

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

#: (foreign key, column, parent, what a delete of the parent does to its assignments)
_KEYS = (
    ('fk_assignment_campaign_id_campaign', 'campaign_id', 'campaign', 'CASCADE'),
    ('fk_assignment_arm_id_arm', 'arm_id', 'arm', 'CASCADE'),
    ('fk_assignment_exposure_channel_id_channel', 'exposure_channel_id', 'channel',
     'SET NULL'),
)


def _action(column: str, on_delete: str, old_id: str) -> str:
    if on_delete == 'CASCADE':
        return f"DELETE FROM assignment WHERE {column} = {old_id};"
    return f"UPDATE assignment SET {column} = NULL WHERE {column} = {old_id};"


def _trigger(parent: str) -> str:
    return f"{parent}_delete_to_assignment"


def _create_triggers() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for _, column, parent, on_delete in _KEYS:
        name = _trigger(parent)
        if sqlite:
            op.execute(f"CREATE TRIGGER {name} AFTER DELETE ON {parent} "
                       f"BEGIN {_action(column, on_delete, 'OLD.id')} END")
            continue
        op.execute(f"CREATE FUNCTION {name}() RETURNS trigger AS $$ "
                   f"BEGIN {_action(column, on_delete, 'OLD.id')} RETURN NULL; END; $$ "
                   "LANGUAGE plpgsql")
        op.execute(f"CREATE TRIGGER {name} AFTER DELETE ON {parent} "
                   f"FOR EACH ROW EXECUTE FUNCTION {name}()")


def _drop_triggers() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for _, _, parent, _ in _KEYS:
        name = _trigger(parent)
        if sqlite:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {parent}")
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")


def upgrade() -> None:
    with op.batch_alter_table('assignment', schema=None) as batch_op:
        for key, _, _, _ in _KEYS:
            batch_op.drop_constraint(key, type_='foreignkey')
    _create_triggers()


def downgrade() -> None:
    _drop_triggers()
    with op.batch_alter_table('assignment', schema=None) as batch_op:
        for key, column, parent, on_delete in _KEYS:
            batch_op.create_foreign_key(key, parent, [column], ['id'], ondelete=on_delete)
