"""Alembic's environment for the records. service/records/schema.py runs the migrations on an open connection
(passed in `config.attributes["connection"]`), under its cross-process lock; `alembic` on the command line
(with -x url=...) works too, for a look at the history or a manual downgrade."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from service.records.tables import Base

config = context.config


def _run(connection) -> None:  # noqa: ANN001
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")  # SQLite alters by copying tables
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    with create_engine(url).connect() as conn:
        _run(conn)
        conn.commit()
