"""Schema management: create missing tables, add the columns later releases added (so existing data dirs keep
working), one process at a time. Hand-made rather than Alembic: seven added columns so far (nullable, or with a
default that old rows take), and every process checks the schema on start, which needs no migration history."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from service.records.tables import Base

# Columns added after the first release: (table, column, SQL type, index name or None). `ensure_schema`
# adds any that an older database lacks (and its index), so existing data dirs keep working.
_ADDED_COLUMNS = (
    ("jobs", "sent_at", "DOUBLE PRECISION", None),
    ("jobs", "batch_key", "VARCHAR(200)", "ix_jobs_batch_key"),
    ("jobs", "batch_size", "INTEGER", None),
    ("jobs", "eta_s", "DOUBLE PRECISION", None),
    # Rows from before tenants existed belong to the local tenant (what a service without keys uses).
    ("jobs", "tenant", "VARCHAR(64) NOT NULL DEFAULT 'local'", "ix_jobs_tenant"),
    ("images", "tenant", "VARCHAR(64) NOT NULL DEFAULT 'local'", "ix_images_tenant"),
    ("images", "comparisons", "JSON", None),
    ("jobs", "upload_bytes", "INTEGER", None),
    ("jobs", "image_deleted_at", "DOUBLE PRECISION", None),
)
# Indexes added later on columns that were there from the start: (table, column, index name).
_ADDED_INDEXES = (("jobs", "finished_at", "ix_jobs_finished_at"),)
SCHEMA_LOCK = 0x7475_6E65  # a PostgreSQL advisory lock id: serialises schema setup between processes


def ensure_schema(conn: Connection) -> None:
    """Creates missing tables and adds missing columns. On PostgreSQL several API and worker processes may
    start at once; an advisory lock in the (transactional) DDL's transaction lets one at a time do this."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK})
    Base.metadata.create_all(conn)
    for table, column, sql_type, index in _ADDED_COLUMNS:
        present = {c["name"] for c in inspect(conn).get_columns(table)}
        if column not in present:
            try:
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}"))
            except (OperationalError, ProgrammingError) as e:  # another process added it meanwhile (SQLite)
                if "duplicate column" not in str(e).lower():
                    raise
        if index is not None:  # create_all made it on a fresh table; an upgraded one needs it too
            conn.execute(text(f"CREATE INDEX IF NOT EXISTS {index} ON {table} ({column})"))
    for table, column, index in _ADDED_INDEXES:
        conn.execute(text(f"CREATE INDEX IF NOT EXISTS {index} ON {table} ({column})"))


@contextmanager
def sqlite_schema_lock(engine: Engine) -> Iterator[None]:
    """SQLite's counterpart of the PostgreSQL advisory lock: an API and workers opening a fresh database
    together would otherwise collide in create_all (a read transaction upgraded to a write one fails with
    "database is locked" at once, without waiting for the busy timeout). A lock file beside the database
    lets one process at a time set the schema up."""
    path = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if not path or path == ":memory:":
        yield
        return
    import fcntl

    with open(f"{path}.schema-lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
