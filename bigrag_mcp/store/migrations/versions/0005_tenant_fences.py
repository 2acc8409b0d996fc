"""tenant fences: offboarded tenants whose writes are refused until re-admitted

Revision ID: 0005
Revises: 0002
Create Date: 2026-11-27 15:20:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tenant_fences',
    sa.Column('collection', sa.String(length=64), nullable=False),
    sa.Column('tenant', sa.String(length=256), nullable=False),
    sa.Column('offboarded_tenant', sa.String(length=256), nullable=False),
    sa.Column('offboarded_by', sa.String(length=32), nullable=True),
    sa.Column('offboarded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('collection', 'tenant')
    )


def downgrade() -> None:
    op.drop_table('tenant_fences')
