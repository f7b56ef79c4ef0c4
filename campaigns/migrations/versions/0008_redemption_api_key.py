"""Redemptions record the API key that made them

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

Only the key that made a redemption (or a management key) may roll it back, so the
redemption keeps its key's id. No foreign key: every redemption of a storefront would
lock its key's row for the check (see 0007); API keys are revoked, never deleted.

Redemptions made before this revision get the key their idempotency key names (the
storefront stores it as "<api key id>:<client's key>"); one whose prefix names no key
keeps none, and only a management key may roll it back.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from campaigns.types import BigId

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('redemption', schema=None) as batch_op:
        batch_op.add_column(sa.Column('api_key_id', BigId, nullable=True))
    op.execute(
        "UPDATE redemption SET api_key_id = (SELECT k.id FROM api_key k "
        "WHERE redemption.idempotency_key LIKE CAST(k.id AS VARCHAR(20)) || ':%')")


def downgrade() -> None:
    with op.batch_alter_table('redemption', schema=None) as batch_op:
        batch_op.drop_column('api_key_id')
