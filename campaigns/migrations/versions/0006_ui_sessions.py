"""Marketer-UI sign-in sessions

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22

Server-side sessions for the marketer UI: the cookie carries a random token, the table
keeps only its SHA-256, the user, when the session began and was last seen, its absolute
expiry and when it was revoked (sign-out, rotation at sign-in). Deleting a user deletes
their sessions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from campaigns.types import BigId, UTCDateTime

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'ui_session',
        sa.Column('id', BigId, autoincrement=True, nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('user_id', BigId, nullable=False),
        sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('last_seen_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint('expires_at > created_at',
                           name=op.f('ck_ui_session_expiry_after_creation')),
        sa.ForeignKeyConstraint(['user_id'], ['app_user.id'],
                                name=op.f('fk_ui_session_user_id_app_user'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ui_session')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_ui_session_token_hash')),
    )
    op.create_index(op.f('ix_ui_session_user_id'), 'ui_session', ['user_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_ui_session_user_id'), table_name='ui_session')
    op.drop_table('ui_session')
