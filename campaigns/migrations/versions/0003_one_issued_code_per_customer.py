"""one issued coupon code per customer and campaign

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('coupon_code', schema=None) as batch_op:
        batch_op.create_index('uq_coupon_code_issued', ['campaign_id', 'customer_id'],
                              unique=True,
                              sqlite_where=sa.text('customer_id IS NOT NULL'),
                              postgresql_where=sa.text('customer_id IS NOT NULL'))


def downgrade() -> None:
    with op.batch_alter_table('coupon_code', schema=None) as batch_op:
        batch_op.drop_index('uq_coupon_code_issued')
