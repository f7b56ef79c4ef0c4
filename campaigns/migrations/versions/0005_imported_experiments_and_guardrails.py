"""Imported experiments and per-campaign guardrails

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22

A campaign is either run by ChannelShift (origin 'live') or a finished experiment imported
for its report (origin 'imported'); only the latter may lack a migration goal, so goal_id
becomes nullable under a CHECK. The experiment_* tables hold imported units, their arms,
outcomes with optional pre-period covariates, and segment values. Campaigns gain the list
of guardrail metrics the sequential monitor watches.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

from campaigns.types import BigId, JSONValue

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_GUARDRAILS = json.dumps(["complaints", "churn", "revenue"])


def upgrade() -> None:
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.add_column(sa.Column('origin', sa.String(length=20), nullable=False,
                                      server_default='live'))
        batch_op.add_column(sa.Column('guardrails', JSONValue, nullable=False,
                                      server_default=_GUARDRAILS))
        batch_op.alter_column('goal_id', existing_type=BigId, nullable=True)
        batch_op.create_check_constraint('origin', "origin IN ('live', 'imported')")
        batch_op.create_check_constraint('goal_required',
                                         "goal_id IS NOT NULL OR origin = 'imported'")

    op.create_table(
        'experiment_metric',
        sa.Column('id', BigId, autoincrement=True, nullable=False),
        sa.Column('campaign_id', BigId, nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('source_column', sa.String(length=200), nullable=False),
        sa.Column('covariate_column', sa.String(length=200), nullable=True),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.CheckConstraint("kind IN ('binary', 'continuous')",
                           name=op.f('ck_experiment_metric_kind')),
        sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'],
                                name=op.f('fk_experiment_metric_campaign_id_campaign'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_experiment_metric')),
        sa.UniqueConstraint('campaign_id', 'name',
                            name=op.f('uq_experiment_metric_campaign_id_name')),
    )
    op.create_index(op.f('ix_experiment_metric_campaign_id'), 'experiment_metric',
                    ['campaign_id'], unique=False)
    op.create_table(
        'experiment_unit',
        sa.Column('id', BigId, autoincrement=True, nullable=False),
        sa.Column('campaign_id', BigId, nullable=False),
        sa.Column('arm_id', BigId, nullable=False),
        sa.Column('unit_key', sa.String(length=200), nullable=False),
        sa.Column('row_number', sa.Integer(), nullable=False),
        sa.Column('score', sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(['arm_id'], ['arm.id'],
                                name=op.f('fk_experiment_unit_arm_id_arm'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'],
                                name=op.f('fk_experiment_unit_campaign_id_campaign'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_experiment_unit')),
        sa.UniqueConstraint('campaign_id', 'unit_key',
                            name=op.f('uq_experiment_unit_campaign_id_unit_key')),
    )
    op.create_index(op.f('ix_experiment_unit_arm_id'), 'experiment_unit', ['arm_id'],
                    unique=False)
    op.create_table(
        'experiment_value',
        sa.Column('unit_id', BigId, nullable=False),
        sa.Column('metric_id', BigId, nullable=False),
        sa.Column('value', sa.Float(), nullable=False),
        sa.Column('pre_value', sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(['metric_id'], ['experiment_metric.id'],
                                name=op.f('fk_experiment_value_metric_id_experiment_metric'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['unit_id'], ['experiment_unit.id'],
                                name=op.f('fk_experiment_value_unit_id_experiment_unit'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('unit_id', 'metric_id', name=op.f('pk_experiment_value')),
    )
    op.create_table(
        'experiment_segment',
        sa.Column('unit_id', BigId, nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('value', sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(['unit_id'], ['experiment_unit.id'],
                                name=op.f('fk_experiment_segment_unit_id_experiment_unit'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('unit_id', 'name', name=op.f('pk_experiment_segment')),
    )


def downgrade() -> None:
    op.drop_table('experiment_segment')
    op.drop_table('experiment_value')
    op.drop_index(op.f('ix_experiment_unit_arm_id'), table_name='experiment_unit')
    op.drop_table('experiment_unit')
    op.drop_index(op.f('ix_experiment_metric_campaign_id'), table_name='experiment_metric')
    op.drop_table('experiment_metric')
    op.execute("DELETE FROM campaign WHERE origin = 'imported'")
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.drop_constraint('goal_required', type_='check')
        batch_op.drop_constraint('origin', type_='check')
        batch_op.alter_column('goal_id', existing_type=BigId, nullable=False)
        batch_op.drop_column('guardrails')
        batch_op.drop_column('origin')
