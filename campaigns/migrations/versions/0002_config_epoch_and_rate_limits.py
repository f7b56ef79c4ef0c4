"""config epoch and rate limits

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import campaigns.types

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('config_epoch',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('value', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_config_epoch_single_row')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_config_epoch'))
    )
    op.create_table('rate_limit_bucket',
    sa.Column('subject', sa.String(length=200), nullable=False),
    sa.Column('window_start', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('subject', 'window_start', name=op.f('pk_rate_limit_bucket'))
    )
    op.execute("INSERT INTO config_epoch (id, value) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table('rate_limit_bucket')
    op.drop_table('config_epoch')
