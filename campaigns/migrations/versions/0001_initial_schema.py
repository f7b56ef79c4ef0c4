"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import campaigns.types
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


# The points ledger is append-only: balances are derived from it, so history must not change.
_LEDGER_GUARD_SQLITE = [
    """CREATE TRIGGER points_ledger_no_update BEFORE UPDATE ON points_ledger
       BEGIN SELECT RAISE(ABORT, 'points_ledger is append-only'); END""",
    """CREATE TRIGGER points_ledger_no_delete BEFORE DELETE ON points_ledger
       BEGIN SELECT RAISE(ABORT, 'points_ledger is append-only'); END""",
]
_LEDGER_GUARD_POSTGRESQL = [
    """CREATE FUNCTION points_ledger_append_only() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'points_ledger is append-only'; END; $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER points_ledger_no_change BEFORE UPDATE OR DELETE ON points_ledger
       FOR EACH ROW EXECUTE FUNCTION points_ledger_append_only()""",
]


def _ledger_guard() -> list[str]:
    return _LEDGER_GUARD_SQLITE if op.get_bind().dialect.name == "sqlite" else _LEDGER_GUARD_POSTGRESQL


def upgrade() -> None:

    op.create_table('api_key',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('prefix', sa.String(length=20), nullable=False),
    sa.Column('key_hash', sa.String(length=128), nullable=False),
    sa.Column('scope', sa.String(length=20), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('created_at', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', campaigns.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', campaigns.types.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("scope IN ('storefront', 'management', 'analytics')", name=op.f('ck_api_key_scope')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_key')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_key_key_hash')),
    sa.UniqueConstraint('prefix', name=op.f('uq_api_key_prefix'))
    )
    op.create_table('app_user',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('username', sa.String(length=100), nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("role IN ('admin', 'marketer', 'analyst', 'viewer')", name=op.f('ck_app_user_role')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_app_user')),
    sa.UniqueConstraint('username', name=op.f('uq_app_user_username'))
    )
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=100), nullable=False),
    sa.Column('entity_type', sa.String(length=60), nullable=False),
    sa.Column('entity_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_log_entity', ['entity_type', 'entity_id'], unique=False)

    op.create_table('channel',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('key', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('store', 'sales_rep', 'call_centre', 'ivr', 'web', 'app', 'email', 'partner')", name=op.f('ck_channel_kind')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_channel')),
    sa.UniqueConstraint('key', name=op.f('uq_channel_key'))
    )
    op.create_table('customer',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('external_id', sa.String(length=100), nullable=False),
    sa.Column('segment', sa.String(length=40), nullable=True),
    sa.Column('value_tier', sa.String(length=20), nullable=True),
    sa.Column('loyalty_tier', sa.String(length=40), nullable=True),
    sa.Column('preferred_channel', sa.String(length=40), nullable=True),
    sa.Column('region', sa.String(length=40), nullable=True),
    sa.Column('age_band', sa.String(length=20), nullable=True),
    sa.Column('tenure_months', sa.Integer(), nullable=False),
    sa.Column('points', sa.Integer(), nullable=False),
    sa.Column('lifetime_value_minor', sa.BigInteger(), nullable=False),
    sa.Column('is_new', sa.Boolean(), nullable=False),
    sa.Column('attributes', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('points >= 0', name=op.f('ck_customer_points_not_negative')),
    sa.CheckConstraint('tenure_months >= 0', name=op.f('ck_customer_tenure_not_negative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_customer')),
    sa.UniqueConstraint('external_id', name=op.f('uq_customer_external_id'))
    )
    with op.batch_alter_table('customer', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_customer_preferred_channel'), ['preferred_channel'], unique=False)
        batch_op.create_index(batch_op.f('ix_customer_segment'), ['segment'], unique=False)
        batch_op.create_index(batch_op.f('ix_customer_value_tier'), ['value_tier'], unique=False)

    op.create_table('incentive',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('type', sa.String(length=40), nullable=False),
    sa.Column('config', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_incentive'))
    )
    op.create_table('stage',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('key', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stage')),
    sa.UniqueConstraint('key', name=op.f('uq_stage_key'))
    )
    op.create_table('channel_cost',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('channel_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('stage_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('cost_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('updated_at', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('cost_minor >= 0', name=op.f('ck_channel_cost_cost_not_negative')),
    sa.ForeignKeyConstraint(['channel_id'], ['channel.id'], name=op.f('fk_channel_cost_channel_id_channel'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['stage_id'], ['stage.id'], name=op.f('fk_channel_cost_stage_id_stage'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_channel_cost')),
    sa.UniqueConstraint('channel_id', 'stage_id', name=op.f('uq_channel_cost_channel_id_stage_id'))
    )
    with op.batch_alter_table('channel_cost', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_channel_cost_channel_id'), ['channel_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_channel_cost_stage_id'), ['stage_id'], unique=False)

    op.create_table('channel_event',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('client_event_id', sa.String(length=200), nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('channel_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('stage_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('occurred_at', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('cost_minor', sa.BigInteger(), nullable=True),
    sa.Column('revenue_minor', sa.BigInteger(), nullable=True),
    sa.CheckConstraint("kind IN ('interaction', 'complaint', 'churn', 'acquisition')", name=op.f('ck_channel_event_kind')),
    sa.CheckConstraint('cost_minor IS NULL OR cost_minor >= 0', name=op.f('ck_channel_event_cost_not_negative')),
    sa.ForeignKeyConstraint(['channel_id'], ['channel.id'], name=op.f('fk_channel_event_channel_id_channel'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_channel_event_customer_id_customer'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['stage_id'], ['stage.id'], name=op.f('fk_channel_event_stage_id_stage'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_channel_event')),
    sa.UniqueConstraint('client_event_id', name=op.f('uq_channel_event_client_event_id'))
    )
    with op.batch_alter_table('channel_event', schema=None) as batch_op:
        batch_op.create_index('ix_channel_event_customer_time', ['customer_id', 'occurred_at'], unique=False)

    op.create_table('conversion',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('client_event_id', sa.String(length=200), nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('channel_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('occurred_at', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revenue_minor', sa.BigInteger(), nullable=False),
    sa.Column('margin_minor', sa.BigInteger(), nullable=True),
    sa.CheckConstraint('revenue_minor >= 0', name=op.f('ck_conversion_revenue_not_negative')),
    sa.ForeignKeyConstraint(['channel_id'], ['channel.id'], name=op.f('fk_conversion_channel_id_channel'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_conversion_customer_id_customer'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conversion')),
    sa.UniqueConstraint('client_event_id', name=op.f('uq_conversion_client_event_id'))
    )
    with op.batch_alter_table('conversion', schema=None) as batch_op:
        batch_op.create_index('ix_conversion_customer_time', ['customer_id', 'occurred_at'], unique=False)

    op.create_table('incentive_stock',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('incentive_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('item_key', sa.String(length=60), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('used', sa.Integer(), nullable=False),
    sa.CheckConstraint('used <= total', name=op.f('ck_incentive_stock_used_within_total')),
    sa.CheckConstraint('used >= 0', name=op.f('ck_incentive_stock_used_not_negative')),
    sa.ForeignKeyConstraint(['incentive_id'], ['incentive.id'], name=op.f('fk_incentive_stock_incentive_id_incentive'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_incentive_stock')),
    sa.UniqueConstraint('incentive_id', 'item_key', name=op.f('uq_incentive_stock_incentive_id_item_key'))
    )
    op.create_table('migration_goal',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('stage_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('target_channel_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('metric', sa.String(length=20), nullable=False),
    sa.Column('window_days', sa.Integer(), nullable=False),
    sa.Column('target_uplift', sa.Numeric(precision=6, scale=4), nullable=False),
    sa.Column('eligibility_rule', sa.Text(), nullable=True),
    sa.Column('eligibility_tree', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('created_at', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("metric IN ('adoption', 'share')", name=op.f('ck_migration_goal_metric')),
    sa.CheckConstraint('target_uplift > 0 AND target_uplift <= 1', name=op.f('ck_migration_goal_uplift_range')),
    sa.CheckConstraint('window_days > 0', name=op.f('ck_migration_goal_window_positive')),
    sa.ForeignKeyConstraint(['stage_id'], ['stage.id'], name=op.f('fk_migration_goal_stage_id_stage'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['target_channel_id'], ['channel.id'], name=op.f('fk_migration_goal_target_channel_id_channel'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_migration_goal')),
    sa.UniqueConstraint('name', name=op.f('uq_migration_goal_name'))
    )
    with op.batch_alter_table('migration_goal', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_migration_goal_stage_id'), ['stage_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_migration_goal_target_channel_id'), ['target_channel_id'], unique=False)

    op.create_table('campaign',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('goal_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('starts_at', campaigns.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('ends_at', campaigns.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('budget_minor', sa.BigInteger(), nullable=True),
    sa.Column('spent_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('per_customer_limit', sa.Integer(), nullable=True),
    sa.Column('stacking', sa.String(length=20), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('salt', sa.String(length=64), nullable=False),
    sa.Column('allocation_period', sa.Integer(), nullable=False),
    sa.Column('control_opt_out', sa.Boolean(), nullable=False),
    sa.Column('control_opt_out_reason', sa.Text(), nullable=True),
    sa.Column('eligibility_rule', sa.Text(), nullable=True),
    sa.Column('eligibility_tree', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('pause_reason', sa.Text(), nullable=True),
    sa.Column('config_version', sa.Integer(), nullable=False),
    sa.Column('created_at', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("stacking IN ('exclusive', 'stackable')", name=op.f('ck_campaign_stacking')),
    sa.CheckConstraint("status IN ('draft', 'scheduled', 'running', 'paused', 'ended')", name=op.f('ck_campaign_status')),
    sa.CheckConstraint('allocation_period >= 1', name=op.f('ck_campaign_allocation_period_positive')),
    sa.CheckConstraint('budget_minor IS NULL OR budget_minor >= 0', name=op.f('ck_campaign_budget_not_negative')),
    sa.CheckConstraint('budget_minor IS NULL OR spent_minor <= budget_minor', name=op.f('ck_campaign_budget_not_overspent')),
    sa.CheckConstraint('ends_at IS NULL OR starts_at IS NULL OR ends_at > starts_at', name=op.f('ck_campaign_schedule_order')),
    sa.CheckConstraint('per_customer_limit IS NULL OR per_customer_limit > 0', name=op.f('ck_campaign_limit_positive')),
    sa.CheckConstraint('spent_minor >= 0', name=op.f('ck_campaign_spent_not_negative')),
    sa.ForeignKeyConstraint(['goal_id'], ['migration_goal.id'], name=op.f('fk_campaign_goal_id_migration_goal'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign')),
    sa.UniqueConstraint('name', name=op.f('uq_campaign_name'))
    )
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_campaign_goal_id'), ['goal_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_campaign_status'), ['status'], unique=False)

    op.create_table('goal_source_channel',
    sa.Column('goal_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('channel_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['channel_id'], ['channel.id'], name=op.f('fk_goal_source_channel_channel_id_channel'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['goal_id'], ['migration_goal.id'], name=op.f('fk_goal_source_channel_goal_id_migration_goal'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('goal_id', 'channel_id', name=op.f('pk_goal_source_channel'))
    )
    op.create_table('arm',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('campaign_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('weight', sa.Integer(), nullable=False),
    sa.Column('is_control', sa.Boolean(), nullable=False),
    sa.Column('incentive_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.CheckConstraint('NOT (is_control AND incentive_id IS NOT NULL)', name=op.f('ck_arm_control_has_no_incentive')),
    sa.CheckConstraint('weight >= 0', name=op.f('ck_arm_weight_not_negative')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], name=op.f('fk_arm_campaign_id_campaign'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['incentive_id'], ['incentive.id'], name=op.f('fk_arm_incentive_id_incentive'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_arm')),
    sa.UniqueConstraint('campaign_id', 'name', name=op.f('uq_arm_campaign_id_name'))
    )
    with op.batch_alter_table('arm', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_arm_campaign_id'), ['campaign_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_arm_incentive_id'), ['incentive_id'], unique=False)
        batch_op.create_index('uq_arm_one_control', ['campaign_id'], unique=True, sqlite_where=sa.text('is_control'), postgresql_where=sa.text('is_control'))

    op.create_table('coupon_code',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('incentive_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('campaign_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('max_uses', sa.Integer(), nullable=True),
    sa.Column('uses', sa.Integer(), nullable=False),
    sa.Column('issued_at', campaigns.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('expires_at', campaigns.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('max_uses IS NULL OR uses <= max_uses', name=op.f('ck_coupon_code_uses_within_max')),
    sa.CheckConstraint('uses >= 0', name=op.f('ck_coupon_code_uses_not_negative')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], name=op.f('fk_coupon_code_campaign_id_campaign'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_coupon_code_customer_id_customer'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['incentive_id'], ['incentive.id'], name=op.f('fk_coupon_code_incentive_id_incentive'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_coupon_code')),
    sa.UniqueConstraint('code', name=op.f('uq_coupon_code_code'))
    )
    with op.batch_alter_table('coupon_code', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_coupon_code_campaign_id'), ['campaign_id'], unique=False)
        batch_op.create_index('ix_coupon_code_unissued', ['incentive_id', 'customer_id'], unique=False)

    op.create_table('lottery_draw',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('campaign_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('incentive_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('seed', sa.String(length=128), nullable=False),
    sa.Column('algorithm', sa.String(length=40), nullable=False),
    sa.Column('entries_digest', sa.String(length=64), nullable=False),
    sa.Column('drawn_by', sa.String(length=200), nullable=False),
    sa.Column('drawn_at', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], name=op.f('fk_lottery_draw_campaign_id_campaign'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['incentive_id'], ['incentive.id'], name=op.f('fk_lottery_draw_incentive_id_incentive'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lottery_draw'))
    )
    with op.batch_alter_table('lottery_draw', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lottery_draw_campaign_id'), ['campaign_id'], unique=False)

    op.create_table('lottery_entry',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('campaign_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('incentive_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('entries', sa.Integer(), nullable=False),
    sa.Column('source_ref', sa.String(length=200), nullable=False),
    sa.Column('created_at', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('entries > 0', name=op.f('ck_lottery_entry_entries_positive')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], name=op.f('fk_lottery_entry_campaign_id_campaign'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_lottery_entry_customer_id_customer'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['incentive_id'], ['incentive.id'], name=op.f('fk_lottery_entry_incentive_id_incentive'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lottery_entry')),
    sa.UniqueConstraint('campaign_id', 'source_ref', name=op.f('uq_lottery_entry_campaign_id_source_ref'))
    )
    with op.batch_alter_table('lottery_entry', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lottery_entry_campaign_id'), ['campaign_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_lottery_entry_customer_id'), ['customer_id'], unique=False)

    op.create_table('points_ledger',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('campaign_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('delta', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.Column('source_ref', sa.String(length=200), nullable=False),
    sa.Column('created_at', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('delta <> 0', name=op.f('ck_points_ledger_delta_not_zero')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], name=op.f('fk_points_ledger_campaign_id_campaign'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_points_ledger_customer_id_customer'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_points_ledger')),
    sa.UniqueConstraint('customer_id', 'source_ref', name=op.f('uq_points_ledger_customer_id_source_ref'))
    )
    op.create_table('arm_allocation',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('campaign_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('period', sa.Integer(), nullable=False),
    sa.Column('arm_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('weight', sa.Integer(), nullable=False),
    sa.Column('started_at', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('weight >= 0', name=op.f('ck_arm_allocation_weight_not_negative')),
    sa.ForeignKeyConstraint(['arm_id'], ['arm.id'], name=op.f('fk_arm_allocation_arm_id_arm'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], name=op.f('fk_arm_allocation_campaign_id_campaign'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_arm_allocation')),
    sa.UniqueConstraint('campaign_id', 'period', 'arm_id', name=op.f('uq_arm_allocation_campaign_id_period_arm_id'))
    )
    with op.batch_alter_table('arm_allocation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_arm_allocation_arm_id'), ['arm_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_arm_allocation_campaign_id'), ['campaign_id'], unique=False)

    op.create_table('assignment',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('campaign_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('arm_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('allocation_period', sa.Integer(), nullable=False),
    sa.Column('first_exposed_at', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('exposure_channel_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('redemption_count', sa.Integer(), nullable=False),
    sa.CheckConstraint('redemption_count >= 0', name=op.f('ck_assignment_redemptions_not_negative')),
    sa.ForeignKeyConstraint(['arm_id'], ['arm.id'], name=op.f('fk_assignment_arm_id_arm'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], name=op.f('fk_assignment_campaign_id_campaign'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_assignment_customer_id_customer'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['exposure_channel_id'], ['channel.id'], name=op.f('fk_assignment_exposure_channel_id_channel'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assignment')),
    sa.UniqueConstraint('campaign_id', 'customer_id', name=op.f('uq_assignment_campaign_id_customer_id'))
    )
    with op.batch_alter_table('assignment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_assignment_arm_id'), ['arm_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_assignment_customer_id'), ['customer_id'], unique=False)

    op.create_table('lottery_winner',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('draw_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('prize_key', sa.String(length=60), nullable=False),
    sa.Column('value_minor', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_lottery_winner_customer_id_customer'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['draw_id'], ['lottery_draw.id'], name=op.f('fk_lottery_winner_draw_id_lottery_draw'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lottery_winner')),
    sa.UniqueConstraint('draw_id', 'customer_id', name=op.f('uq_lottery_winner_draw_id_customer_id'))
    )
    with op.batch_alter_table('lottery_winner', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lottery_winner_draw_id'), ['draw_id'], unique=False)

    op.create_table('redemption',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('campaign_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('arm_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('coupon_code_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('channel_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('order_id', sa.String(length=100), nullable=True),
    sa.Column('order_amount_minor', sa.BigInteger(), nullable=True),
    sa.Column('benefit_minor', sa.BigInteger(), nullable=False),
    sa.Column('cost_minor', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('response', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('rolled_back_at', campaigns.types.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('applied', 'rolled_back')", name=op.f('ck_redemption_status')),
    sa.CheckConstraint('benefit_minor >= 0', name=op.f('ck_redemption_benefit_not_negative')),
    sa.CheckConstraint('cost_minor >= 0', name=op.f('ck_redemption_cost_not_negative')),
    sa.CheckConstraint('order_amount_minor IS NULL OR order_amount_minor >= 0', name=op.f('ck_redemption_order_not_negative')),
    sa.ForeignKeyConstraint(['arm_id'], ['arm.id'], name=op.f('fk_redemption_arm_id_arm'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], name=op.f('fk_redemption_campaign_id_campaign'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['channel_id'], ['channel.id'], name=op.f('fk_redemption_channel_id_channel'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['coupon_code_id'], ['coupon_code.id'], name=op.f('fk_redemption_coupon_code_id_coupon_code'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_redemption_customer_id_customer'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_redemption')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_redemption_idempotency_key'))
    )
    with op.batch_alter_table('redemption', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_redemption_campaign_id'), ['campaign_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_redemption_coupon_code_id'), ['coupon_code_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_redemption_customer_id'), ['customer_id'], unique=False)

    op.create_table('trial_grant',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('campaign_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('incentive_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('redemption_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('product', sa.String(length=100), nullable=False),
    sa.Column('starts_at', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ends_at', campaigns.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('converted_at', campaigns.types.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint('ends_at > starts_at', name=op.f('ck_trial_grant_period_order')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], name=op.f('fk_trial_grant_campaign_id_campaign'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_trial_grant_customer_id_customer'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['incentive_id'], ['incentive.id'], name=op.f('fk_trial_grant_incentive_id_incentive'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['redemption_id'], ['redemption.id'], name=op.f('fk_trial_grant_redemption_id_redemption'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_trial_grant')),
    sa.UniqueConstraint('customer_id', 'incentive_id', name=op.f('uq_trial_grant_customer_id_incentive_id'))
    )
    with op.batch_alter_table('trial_grant', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_trial_grant_campaign_id'), ['campaign_id'], unique=False)
    for statement in _ledger_guard():
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS points_ledger_no_update")
        op.execute("DROP TRIGGER IF EXISTS points_ledger_no_delete")
    else:
        op.execute("DROP TRIGGER IF EXISTS points_ledger_no_change ON points_ledger")
        op.execute("DROP FUNCTION IF EXISTS points_ledger_append_only()")

    with op.batch_alter_table('trial_grant', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_trial_grant_campaign_id'))

    op.drop_table('trial_grant')
    with op.batch_alter_table('redemption', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_redemption_customer_id'))
        batch_op.drop_index(batch_op.f('ix_redemption_coupon_code_id'))
        batch_op.drop_index(batch_op.f('ix_redemption_campaign_id'))

    op.drop_table('redemption')
    with op.batch_alter_table('lottery_winner', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lottery_winner_draw_id'))

    op.drop_table('lottery_winner')
    with op.batch_alter_table('assignment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_assignment_customer_id'))
        batch_op.drop_index(batch_op.f('ix_assignment_arm_id'))

    op.drop_table('assignment')
    with op.batch_alter_table('arm_allocation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_arm_allocation_campaign_id'))
        batch_op.drop_index(batch_op.f('ix_arm_allocation_arm_id'))

    op.drop_table('arm_allocation')
    op.drop_table('points_ledger')
    with op.batch_alter_table('lottery_entry', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lottery_entry_customer_id'))
        batch_op.drop_index(batch_op.f('ix_lottery_entry_campaign_id'))

    op.drop_table('lottery_entry')
    with op.batch_alter_table('lottery_draw', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lottery_draw_campaign_id'))

    op.drop_table('lottery_draw')
    with op.batch_alter_table('coupon_code', schema=None) as batch_op:
        batch_op.drop_index('ix_coupon_code_unissued')
        batch_op.drop_index(batch_op.f('ix_coupon_code_campaign_id'))

    op.drop_table('coupon_code')
    with op.batch_alter_table('arm', schema=None) as batch_op:
        batch_op.drop_index('uq_arm_one_control', sqlite_where=sa.text('is_control'), postgresql_where=sa.text('is_control'))
        batch_op.drop_index(batch_op.f('ix_arm_incentive_id'))
        batch_op.drop_index(batch_op.f('ix_arm_campaign_id'))

    op.drop_table('arm')
    op.drop_table('goal_source_channel')
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_campaign_status'))
        batch_op.drop_index(batch_op.f('ix_campaign_goal_id'))

    op.drop_table('campaign')
    with op.batch_alter_table('migration_goal', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_migration_goal_target_channel_id'))
        batch_op.drop_index(batch_op.f('ix_migration_goal_stage_id'))

    op.drop_table('migration_goal')
    op.drop_table('incentive_stock')
    with op.batch_alter_table('conversion', schema=None) as batch_op:
        batch_op.drop_index('ix_conversion_customer_time')

    op.drop_table('conversion')
    with op.batch_alter_table('channel_event', schema=None) as batch_op:
        batch_op.drop_index('ix_channel_event_customer_time')

    op.drop_table('channel_event')
    with op.batch_alter_table('channel_cost', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_channel_cost_stage_id'))
        batch_op.drop_index(batch_op.f('ix_channel_cost_channel_id'))

    op.drop_table('channel_cost')
    op.drop_table('stage')
    op.drop_table('incentive')
    with op.batch_alter_table('customer', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_customer_value_tier'))
        batch_op.drop_index(batch_op.f('ix_customer_segment'))
        batch_op.drop_index(batch_op.f('ix_customer_preferred_channel'))

    op.drop_table('customer')
    op.drop_table('channel')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_log_entity')

    op.drop_table('audit_log')
    op.drop_table('app_user')
    op.drop_table('api_key')

