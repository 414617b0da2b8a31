"""The records' Alembic migrations on SQLite and PostgreSQL: every revision up and down (data kept where a
revision keeps it), the head equal to the models (a model change without its revision fails here), a database
from before migrations stamped and upgraded, and `tuner api`'s app upgrading at start."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pg_fixtures import postgres_url  # noqa: F401 - a fixture
from sqlalchemy import create_engine, inspect, text

from service.records.schema import (
    BASELINE,
    alembic_config,
    current_revision,
    downgrade,
    ensure_schema,
    head_revision,
)
from service.records.tables import Base


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tuner.sqlite'}"
    return request.getfixturevalue("postgres_url")


def _tables(conn) -> set[str]:  # noqa: ANN001
    return set(inspect(conn).get_table_names())


def _indexes(conn, table: str) -> set[str]:  # noqa: ANN001
    return {i["name"] for i in inspect(conn).get_indexes(table)}


def test_every_revision_up_and_down(db_url: str) -> None:
    engine = create_engine(db_url)
    revisions = list(ScriptDirectory.from_config(alembic_config()).walk_revisions())  # head first
    assert [r.revision for r in revisions][-1] == BASELINE and revisions[0].revision == head_revision()
    with engine.begin() as conn:
        ensure_schema(conn)
        assert current_revision(conn) == head_revision()
        conn.execute(text("INSERT INTO jobs (id, tenant, image_id, status, progress, step, params, upload_digest, "
                          "attempts, cancel_requested, created_at, finished_at) VALUES ('job_1', 'local', 'img_1', "
                          "'succeeded', 1, 1, '{}', 'x', 1, 0, 1, 2)"))
    # The head is the models: nothing for autogenerate to add, drop or change.
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == [], (
            "the models differ from the migrations' head: add a revision in service/records/migrations/versions "
            "(service/records/schema.py says how)")
    # Down one revision at a time to nothing, then up again.
    for rev in revisions:
        with engine.begin() as conn:
            downgrade(conn, rev.down_revision or "base")
            assert current_revision(conn) == rev.down_revision
            if rev.down_revision is not None:
                assert conn.execute(text("SELECT id FROM jobs")).scalars().all() == ["job_1"]  # data kept
    with engine.begin() as conn:
        assert _tables(conn) <= {"alembic_version"}
        ensure_schema(conn)
        assert current_revision(conn) == head_revision()
        assert {"jobs", "images", "api_keys", "blob_locks", "idempotency_keys"} <= _tables(conn)
    engine.dispose()


def test_the_finished_at_index_revision(db_url: str) -> None:
    engine = create_engine(db_url)
    with engine.begin() as conn:
        ensure_schema(conn)
        assert "ix_jobs_finished_at" in _indexes(conn, "jobs")
        downgrade(conn, "0001")
        assert "ix_jobs_finished_at" not in _indexes(conn, "jobs")
        ensure_schema(conn)
        assert "ix_jobs_finished_at" in _indexes(conn, "jobs")
    engine.dispose()


def test_a_database_from_before_migrations_is_stamped_and_upgraded(db_url: str) -> None:
    """As the hand-made schema left it (no alembic_version), two columns short: brought to the baseline by the
    old list, stamped, then upgraded; its rows stay."""
    engine = create_engine(db_url)
    with engine.begin() as conn:  # the baseline's tables without the version table, then two columns fewer
        command.upgrade(alembic_config(conn), BASELINE)
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("ALTER TABLE jobs DROP COLUMN eta_s"))
        conn.execute(text("ALTER TABLE images DROP COLUMN comparisons"))
        conn.execute(text("INSERT INTO jobs (id, tenant, image_id, status, progress, step, params, upload_digest, "
                          "attempts, cancel_requested, created_at) VALUES ('job_old', 'local', 'img_1', 'queued', 0, "
                          "0, '{}', 'x', 0, 0, 1)"))
    with engine.begin() as conn:
        assert current_revision(conn) is None
        ensure_schema(conn)
        assert current_revision(conn) == head_revision()
        assert conn.execute(text("SELECT id, eta_s FROM jobs")).all() == [("job_old", None)]
        assert "comparisons" in {c["name"] for c in inspect(conn).get_columns("images")}
        assert "ix_jobs_finished_at" in _indexes(conn, "jobs")
    with engine.connect() as conn:  # (the old list's DOUBLE PRECISION reads back as another float type)
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert [d for d in diffs if not isinstance(d, list)] == [], diffs
    engine.dispose()


def test_the_api_upgrades_its_records_at_start(tmp_path: Path) -> None:
    from service.api.app import create_app
    from service.settings import Settings

    settings = Settings(data_dir=tmp_path, render_compile=False)
    t0 = time.monotonic()
    create_app(settings)
    with create_engine(settings.resolved_database_url).connect() as conn:
        assert current_revision(conn) == head_revision()
    assert time.monotonic() - t0 < 30


def test_tuner_db_shows_and_moves_the_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from tuner_cli.main import main

    monkeypatch.setenv("TUNER_DATA_DIR", str(tmp_path))
    assert main(["db", "current"]) == 0 and "revision none" in capsys.readouterr().out
    assert main(["db", "upgrade"]) == 0 and f"revision {head_revision()}" in capsys.readouterr().out
    assert main(["db", "downgrade", BASELINE]) == 0 and f"revision {BASELINE};" in capsys.readouterr().out
    assert main(["db", "downgrade", "9999"]) == 1 and "no revision '9999'" in capsys.readouterr().err
    assert main(["db", "upgrade"]) == 0 and f"revision {head_revision()};" in capsys.readouterr().out
