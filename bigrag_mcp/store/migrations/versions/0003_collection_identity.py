"""collection identity and the index change log

Collections get a `uid` that is never reused; index generations, the new change log and usage rows are keyed on
it. New collections draw 16 random hex digits; existing ones take their row id in decimal, which no random uid can
equal and which keeps their partition address (`name.id` before, `name.uid` now), so a persistent backend such as
Weaviate needs no reindex. Usage rows are matched to the collection that has their name now (rows of collections
deleted before this revision keep no uid). Generations restart: they only tell a
process with an in-memory index that it must refill, which a process that has just upgraded does anyway.

Revision ID: 0003
Revises: 0006
Create Date: 2026-11-27 15:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('collections', schema=None) as batch_op:
        batch_op.add_column(sa.Column('uid', sa.String(length=32), nullable=True))
    op.execute("UPDATE collections SET uid = CAST(id AS VARCHAR(32))")
    with op.batch_alter_table('collections', schema=None) as batch_op:
        batch_op.alter_column('uid', existing_type=sa.String(length=32), nullable=False)
        batch_op.create_unique_constraint('uq_collections_uid', ['uid'])

    op.drop_table('index_generations')
    op.create_table('index_generations',
    sa.Column('collection_uid', sa.String(length=32), nullable=False),
    sa.Column('tenant', sa.String(length=256), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('compacted_through', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['collection_uid'], ['collections.uid'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('collection_uid', 'tenant')
    )
    op.create_table('index_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('collection_uid', sa.String(length=32), nullable=False),
    sa.Column('tenant', sa.String(length=256), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('record_ids', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['collection_uid'], ['collections.uid'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_index_changes_partition', 'index_changes', ['collection_uid', 'tenant', 'seq'], unique=False)

    with op.batch_alter_table('usage_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('collection_uid', sa.String(length=32), nullable=True))
        batch_op.create_index('ix_usage_collection_uid', ['collection_uid'], unique=False)
    op.execute(
        "UPDATE usage_events SET collection_uid = "
        "(SELECT uid FROM collections WHERE collections.name = usage_events.collection)"
    )


def downgrade() -> None:
    with op.batch_alter_table('usage_events', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_collection_uid')
        batch_op.drop_column('collection_uid')
    op.drop_index('ix_index_changes_partition', table_name='index_changes')
    op.drop_table('index_changes')
    op.drop_table('index_generations')
    op.create_table('index_generations',
    sa.Column('collection_id', sa.Integer(), nullable=False),
    sa.Column('tenant', sa.String(length=256), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['collection_id'], ['collections.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('collection_id', 'tenant')
    )
    with op.batch_alter_table('collections', schema=None) as batch_op:
        batch_op.drop_constraint('uq_collections_uid', type_='unique')
        batch_op.drop_column('uid')
