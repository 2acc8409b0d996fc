"""usage rollup: usage_rollup sums usage_events per aligned block of days, kept by a trigger on usage_events

Every insert into usage_events adds to the rollup in the same statement and transaction (SQLite: a row trigger;
Postgres: a statement trigger over the inserted rows, grouped and in key order so concurrent writers lock rollup rows
in one order). Existing events are summed in. A later migration that rebuilds usage_events with batch_alter_table on
SQLite drops the trigger and must create it again.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 18:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

SPANS = (1, 2, 4, 8, 16, 32, 64)  # = bigrag_mcp.store.models.ROLLUP_SPANS when this revision was written
KEYS = ('scope', 'span', 'start_day', 'collection', 'tenant', 'collection_uid', 'provider', 'model')
SUMS = ('events', 'queries', 'chat_calls', 'documents', 'chunks', 'storage_bytes', 'embedding_tokens',
        'embedding_tokens_estimated', 'chat_input_tokens', 'chat_output_tokens', 'latency_sum')
# scope 0: per (collection, tenant) in every span; 1: per collection, daily; 2: everything, daily
SCOPES = ' UNION ALL '.join(
    f'SELECT {scope} AS scope, {span} AS span' for scope, span in [*((0, s) for s in SPANS), (1, 1), (2, 1)]
)


def _day(e: str, dialect: str) -> str:
    """The event's UTC day as days since 1970-01-01."""
    if dialect == 'postgresql':
        return f"(CAST({e}.created_at AT TIME ZONE 'UTC' AS DATE) - DATE '1970-01-01')"
    return f"CAST(julianday(date({e}.created_at)) - 2440587.5 AS INTEGER)"  # SQLite stores UTC text


def _upsert(e: str, source: str | None, dialect: str) -> str:
    """Add the events of `source` (aliased `e`), or of the single row `e` when source is None, to the rollup."""
    keys = [
        's.scope', 's.span', f'({_day(e, dialect)} / s.span) * s.span',
        f"CASE WHEN s.scope < 2 THEN COALESCE({e}.collection, '') ELSE '' END",
        f"CASE WHEN s.scope = 0 THEN COALESCE({e}.tenant, '') ELSE '' END",
        f"CASE WHEN s.scope < 2 THEN COALESCE({e}.collection_uid, '') ELSE '' END",
        f"COALESCE({e}.provider, '')", f"COALESCE({e}.model, '')",
    ]
    measures = [
        '1', f"CASE WHEN {e}.operation = 'query' THEN 1 ELSE 0 END", f"CASE WHEN {e}.operation = 'chat' THEN 1 ELSE 0 END",
        f'{e}.documents', f'{e}.chunks', f'{e}.storage_bytes', f'{e}.embedding_tokens',
        f'CASE WHEN {e}.tokens_estimated THEN {e}.embedding_tokens ELSE 0 END',
        f'{e}.chat_input_tokens', f'{e}.chat_output_tokens',
        f"CASE WHEN {e}.operation IN ('query', 'chat') THEN {e}.latency_ms ELSE 0.0 END",
    ]
    if source is None:
        body = f"SELECT {', '.join(keys + measures)} FROM ({SCOPES}) AS s WHERE true"
    else:
        positions = ', '.join(str(i + 1) for i in range(len(keys)))
        body = (f"SELECT {', '.join(keys + [f'SUM({m})' for m in measures])} "
                f"FROM {source} AS {e} CROSS JOIN ({SCOPES}) AS s WHERE true "
                f"GROUP BY {positions} ORDER BY {positions}")
    return (f"INSERT INTO usage_rollup ({', '.join(KEYS + SUMS)}) {body} "
            f"ON CONFLICT ({', '.join(KEYS)}) DO UPDATE SET "
            + ', '.join(f'{c} = usage_rollup.{c} + excluded.{c}' for c in SUMS))


def upgrade() -> None:
    op.create_table('usage_rollup',
    *(sa.Column(name, sa.Integer(), nullable=False) for name in KEYS[:3]),
    sa.Column('collection', sa.String(length=64), nullable=False),
    sa.Column('tenant', sa.String(length=256), nullable=False),
    sa.Column('collection_uid', sa.String(length=32), nullable=False),
    sa.Column('provider', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    *(sa.Column(name, sa.BigInteger(), nullable=False) for name in SUMS[:-1]),
    sa.Column('latency_sum', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint(*KEYS),
    sqlite_with_rowid=False,
    )
    dialect = op.get_bind().dialect.name
    op.execute(_upsert('e', 'usage_events', dialect))
    if dialect == 'postgresql':
        op.execute("CREATE FUNCTION usage_rollup_add() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                   f"{_upsert('e', 'new_usage_events', dialect)}; RETURN NULL; END $$")
        op.execute("CREATE TRIGGER usage_rollup_add AFTER INSERT ON usage_events REFERENCING NEW TABLE AS "
                   "new_usage_events FOR EACH STATEMENT EXECUTE FUNCTION usage_rollup_add()")
    else:
        op.execute(f"CREATE TRIGGER usage_rollup_add AFTER INSERT ON usage_events BEGIN "
                   f"{_upsert('NEW', None, dialect)}; END")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP TRIGGER usage_rollup_add ON usage_events')
        op.execute('DROP FUNCTION usage_rollup_add()')
    else:
        op.execute('DROP TRIGGER usage_rollup_add')
    op.drop_table('usage_rollup')
