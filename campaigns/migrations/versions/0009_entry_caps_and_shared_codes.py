"""Lottery entries held per assignment, rolled-back entries, shared coupon codes

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

- `assignment.lottery_entries`: the live entries a customer holds in a campaign's lottery.
  Every entry source (events, redemptions, rollbacks) changes it on the assignment row it
  locks, so "at most N entries per customer" is one comparison on the locked row, not a
  sum over `lottery_entry` that a concurrent statement's snapshot may not see yet. Filled
  from the entries already recorded.
- `lottery_entry.rolled_back_at`: entries of a rolled-back redemption stay for the record
  (draws made before the rollback still verify) but no later draw counts them.
- `coupon_code_use`: one row per customer who redeemed a once-per-customer shared code,
  unique per code and customer.
- A coupon in shared mode gets its `coupon_code` row (the code the marketer chose,
  `max_uses` its `max_redemptions`), shared by every campaign that offers the coupon.
  Shared coupons created before this revision had none, so their codes were unknown.

On SQLite the new column is added in place (`ALTER TABLE ... ADD COLUMN` with its CHECK),
not by a rebuild of `assignment`, whose delete triggers (0007) a rebuild would have to
drop and create again.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

from campaigns.types import BigId, UTCDateTime, utcnow

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

_ENTRIES_CHECK = 'ck_assignment_lottery_entries_not_negative'


def _add_lottery_entries() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        op.execute('ALTER TABLE assignment ADD COLUMN lottery_entries INTEGER DEFAULT 0 '
                   f'NOT NULL CONSTRAINT {_ENTRIES_CHECK} CHECK (lottery_entries >= 0)')
    else:
        op.add_column('assignment', sa.Column('lottery_entries', sa.Integer(),
                                              server_default='0', nullable=False))
        op.create_check_constraint(_ENTRIES_CHECK, 'assignment', 'lottery_entries >= 0')
    op.execute(
        'UPDATE assignment SET lottery_entries = (SELECT COALESCE(SUM(e.entries), 0) '
        'FROM lottery_entry e WHERE e.campaign_id = assignment.campaign_id '
        'AND e.customer_id = assignment.customer_id) '
        'WHERE EXISTS (SELECT 1 FROM lottery_entry e WHERE e.campaign_id = '
        'assignment.campaign_id AND e.customer_id = assignment.customer_id)')


def _shared_code_rows() -> None:
    bind = op.get_bind()
    incentives = bind.execute(sa.text(
        "SELECT id, config FROM incentive WHERE type = 'coupon' ORDER BY id")).all()
    known = {row[0] for row in bind.execute(sa.text('SELECT code FROM coupon_code'))}
    for incentive_id, raw in incentives:
        config = json.loads(raw) if isinstance(raw, str) else raw
        code = config.get('code')
        if config.get('mode') != 'shared' or not code or code in known:
            continue
        known.add(code)
        bind.execute(sa.text(
            'INSERT INTO coupon_code (code, incentive_id, campaign_id, customer_id, max_uses, '
            'uses, created_at) VALUES (:code, :incentive_id, NULL, NULL, :max_uses, 0, :now)'
        ).bindparams(sa.bindparam('now', type_=UTCDateTime())),
            {'code': code, 'incentive_id': incentive_id,
             'max_uses': config.get('max_redemptions'), 'now': utcnow()})


def upgrade() -> None:
    _add_lottery_entries()
    with op.batch_alter_table('lottery_entry') as batch:
        batch.add_column(sa.Column('rolled_back_at', UTCDateTime(timezone=True),
                                   nullable=True))
    op.create_table(
        'coupon_code_use',
        sa.Column('id', BigId, autoincrement=True, nullable=False),
        sa.Column('coupon_code_id', BigId, nullable=False),
        sa.Column('customer_id', BigId, nullable=False),
        sa.Column('redemption_id', BigId, nullable=False),
        sa.ForeignKeyConstraint(['coupon_code_id'], ['coupon_code.id'],
                                name=op.f('fk_coupon_code_use_coupon_code_id_coupon_code'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['customer_id'], ['customer.id'],
                                name=op.f('fk_coupon_code_use_customer_id_customer'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['redemption_id'], ['redemption.id'],
                                name=op.f('fk_coupon_code_use_redemption_id_redemption'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_coupon_code_use')),
        sa.UniqueConstraint('coupon_code_id', 'customer_id',
                            name=op.f('uq_coupon_code_use_coupon_code_id_customer_id')),
    )
    op.create_index(op.f('ix_coupon_code_use_customer_id'), 'coupon_code_use',
                    ['customer_id'], unique=False)
    op.create_index(op.f('ix_coupon_code_use_redemption_id'), 'coupon_code_use',
                    ['redemption_id'], unique=False)
    _shared_code_rows()


def downgrade() -> None:
    # Shared codes keep their coupon_code rows: earlier revisions read them as any code.
    op.drop_index(op.f('ix_coupon_code_use_redemption_id'), table_name='coupon_code_use')
    op.drop_index(op.f('ix_coupon_code_use_customer_id'), table_name='coupon_code_use')
    op.drop_table('coupon_code_use')
    with op.batch_alter_table('lottery_entry') as batch:
        batch.drop_column('rolled_back_at')
    if op.get_bind().dialect.name == 'sqlite':
        op.execute('ALTER TABLE assignment DROP COLUMN lottery_entries')
    else:
        op.drop_constraint(_ENTRIES_CHECK, 'assignment', type_='check')
        op.drop_column('assignment', 'lottery_entries')
