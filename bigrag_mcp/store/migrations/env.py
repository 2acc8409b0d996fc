"""Alembic environment: runs on the connection the application hands over (see store/db.py)."""

from alembic import context

from bigrag_mcp.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through bigrag_mcp.store.db.Database.migrate()")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
