"""Alembic's entry point: run the migrations on the connection we were handed.

:func:`controller.storage.migrate.upgrade` puts an open (sync-facing) connection in
``config.attributes["connection"]``; offline SQL generation is not offered.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from controller.storage.schema import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "run migrations through controller.storage.migrate, which passes a connection"
    )
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite alters tables by copying them; batch mode does that for us.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
