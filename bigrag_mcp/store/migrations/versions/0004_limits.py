"""limits: counters, announced warnings, and the role a key was minted with

Revision ID: 0004
Revises: 0005
Create Date: 2026-11-27 15:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('limit_counters',
    sa.Column('counter_key', sa.String(length=64), nullable=False),
    sa.Column('limit_name', sa.String(length=100), nullable=False),
    sa.Column('metric', sa.String(length=32), nullable=False),
    sa.Column('key_id', sa.String(length=32), nullable=True),
    sa.Column('role', sa.String(length=64), nullable=True),
    sa.Column('collection', sa.String(length=64), nullable=True),
    sa.Column('tenant', sa.String(length=256), nullable=True),
    sa.Column('window_start', sa.String(length=40), nullable=False),
    sa.Column('used', sa.BigInteger(), nullable=False),
    sa.Column('max_value', sa.BigInteger(), nullable=False),
    sa.Column('hard', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('counter_key')
    )
    op.create_index('ix_limit_counters_subject', 'limit_counters', ['collection', 'tenant'], unique=False)
    op.create_table('limit_warnings',
    sa.Column('counter_key', sa.String(length=64), nullable=False),
    sa.Column('window_start', sa.String(length=40), nullable=False),
    sa.Column('threshold', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('counter_key', 'window_start', 'threshold')
    )
    with op.batch_alter_table('api_keys') as batch:
        batch.add_column(sa.Column('role', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('api_keys') as batch:
        batch.drop_column('role')
    op.drop_table('limit_warnings')
    op.drop_index('ix_limit_counters_subject', table_name='limit_counters')
    op.drop_table('limit_counters')
