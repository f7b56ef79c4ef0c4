"""64-bit loyalty points

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

Points are earned per currency unit of revenue times a multiplier; 32 bits overflow for
large orders. SQLite's INTEGER is already 64-bit, and rebuilding points_ledger there
would drop its append-only triggers, so only PostgreSQL changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column('customer', 'points', existing_type=sa.INTEGER(), type_=sa.BigInteger(),
                    existing_nullable=False)
    op.alter_column('points_ledger', 'delta', existing_type=sa.INTEGER(),
                    type_=sa.BigInteger(), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column('points_ledger', 'delta', existing_type=sa.BigInteger(),
                    type_=sa.INTEGER(), existing_nullable=False)
    op.alter_column('customer', 'points', existing_type=sa.BigInteger(), type_=sa.INTEGER(),
                    existing_nullable=False)
