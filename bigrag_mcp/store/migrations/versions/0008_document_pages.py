"""document pages: chunks.page and the extracted text of each page of paged documents

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 15:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('chunks') as batch:
        batch.add_column(sa.Column('page', sa.Integer(), nullable=True))
    op.create_table('document_pages',
    sa.Column('document_id', sa.String(length=32), nullable=False),
    sa.Column('page', sa.Integer(), nullable=False),
    sa.Column('char_start', sa.Integer(), nullable=False),
    sa.Column('char_end', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['document_id'], ['documents.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('document_id', 'page')
    )


def downgrade() -> None:
    op.drop_table('document_pages')
    with op.batch_alter_table('chunks') as batch:
        batch.drop_column('page')
