"""Engines and sessions, per process: a forked Celery child must not reuse its parent's connections."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.records.schema import ensure_schema, sqlite_schema_lock


class Records:
    """Engine and sessions, created per process: a forked Celery child must not reuse its parent's
    connections (SQLite file handles, PostgreSQL sockets)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pid: int | None = None
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None or self._pid != os.getpid():
            if self._engine is not None:
                # In a forked child: forget the parent's pooled connections without closing them, which
                # would end the parent's PostgreSQL sessions.
                self._engine.dispose(close=False)
            kwargs: dict[str, Any] = {"pool_pre_ping": True}
            if self.url.startswith("sqlite"):
                kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
            engine = create_engine(self.url, **kwargs)
            if self.url.startswith("sqlite"):
                event.listen(engine, "connect", _sqlite_pragmas)
            with sqlite_schema_lock(engine), engine.begin() as conn:
                ensure_schema(conn)
            self._engine, self._pid = engine, os.getpid()
            self._sessions = sessionmaker(engine, expire_on_commit=False)
        return self._engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        self.engine  # noqa: B018 - (re)creates the engine in a new process
        assert self._sessions is not None
        with self._sessions() as s, s.begin():
            yield s

    def ping(self) -> None:
        with self.session() as s:
            s.execute(select(1))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the API read while a worker writes progress; the busy timeout waits out short locks (set
    # first, so that the switch to WAL waits too).
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
