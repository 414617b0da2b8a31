"""A fresh PostgreSQL database per test (CREATE DATABASE tuner_test_<random>, dropped afterwards), so
runs on a shared server never collide. Skips where no PostgreSQL answers, but fails in CI (CI must have it)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

# The server, as psycopg sees it; the test database's name is appended for SQLAlchemy.
PG_ADMIN_URL = os.environ.get("TUNER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _admin_connect():  # noqa: ANN202
    import psycopg

    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=2)


@pytest.fixture()
def postgres_url() -> Iterator[str]:
    """`postgresql+psycopg://.../tuner_test_<hex>`: an empty database for one test, dropped after it."""
    try:
        admin = _admin_connect()
    except Exception as e:  # noqa: BLE001 - any failure (no driver, no server, refused) means "none here"
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI and is not answering at {PG_ADMIN_URL}: {e}")
        pytest.skip(f"no PostgreSQL at {PG_ADMIN_URL}: {e}")
    name = f"tuner_test_{uuid.uuid4().hex[:12]}"
    from psycopg.conninfo import conninfo_to_dict

    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            info = conninfo_to_dict(PG_ADMIN_URL)
            user = info.get("user", "postgres")
            password = f":{info['password']}" if info.get("password") else ""
            host, port = info.get("host", "127.0.0.1"), info.get("port", "5432")
            yield f"postgresql+psycopg://{user}{password}@{host}:{port}/{name}"
        finally:
            # FORCE ends sessions a killed test subprocess may have left behind (PostgreSQL 13+).
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
