"""Schema management: Alembic migrations (service/records/migrations/versions), run by every process that
opens the records (`tuner api`, `serve` and `worker` at start, through `Records.engine`), one process at a time.
A schema change is a new revision there (`alembic revision` with script_location service.records:migrations,
or by hand), with its downgrade; tests/service/test_migrations.py runs every revision up and down on SQLite
and PostgreSQL and checks that the head matches the models.

A database made before migrations existed (no alembic_version table) is first brought to the baseline (0001)
by the hand-made list of columns later releases added, as before, then stamped and upgraded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from service.records.tables import Base

BASELINE = "0001"
# The tables and the columns later releases added before migrations existed: (table, column, SQL type, index
# name or None). Only a database from before migrations takes this path, to reach the baseline.
_BASELINE_TABLES = ("jobs", "images", "blob_locks", "idempotency_keys", "api_keys")
_LEGACY_COLUMNS = (
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
SCHEMA_LOCK = 0x7475_6E65  # a PostgreSQL advisory lock id: serialises schema setup between processes


def alembic_config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "service.records:migrations")
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


@cache
def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or BASELINE


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _legacy_to_baseline(conn: Connection) -> None:
    """A database from before migrations: the missing baseline tables, then the columns added since."""
    Base.metadata.create_all(conn, tables=[Base.metadata.tables[t] for t in _BASELINE_TABLES])
    for table, column, sql_type, index in _LEGACY_COLUMNS:
        present = {c["name"] for c in inspect(conn).get_columns(table)}
        if column not in present:
            try:
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}"))
            except (OperationalError, ProgrammingError) as e:  # another process added it meanwhile (SQLite)
                if "duplicate column" not in str(e).lower():
                    raise
        if index is not None:  # create_all made it on a fresh table; an upgraded one needs it too
            conn.execute(text(f"CREATE INDEX IF NOT EXISTS {index} ON {table} ({column})"))
    command.stamp(alembic_config(conn), BASELINE)


def ensure_schema(conn: Connection) -> None:
    """Upgrades the records to the latest revision. On PostgreSQL several API and worker processes may start
    at once; an advisory lock in the (transactional) DDL's transaction lets one at a time do this."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK})
    current = current_revision(conn)
    if current == head_revision():
        return
    if current is None and "jobs" in inspect(conn).get_table_names():
        _legacy_to_baseline(conn)
    command.upgrade(alembic_config(conn), "head")


def downgrade(conn: Connection, revision: str) -> None:
    """Takes the records back to `revision` ("base": no tables), each revision's downgrade in turn."""
    command.downgrade(alembic_config(conn), revision)


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
