"""collection language: the keyword analyzer of each collection

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 15:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('collections') as batch:
        batch.add_column(sa.Column('language', sa.String(length=32), nullable=False, server_default='english'))


def downgrade() -> None:
    with op.batch_alter_table('collections') as batch:
        batch.drop_column('language')
