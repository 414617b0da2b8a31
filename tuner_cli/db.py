"""`tuner db`: the records' schema revision, and moving it (Alembic, service/records/migrations). `tuner api`,
`serve` and `worker` upgrade to the latest revision at start by themselves; this is for a look, or a downgrade
before running an older release. Only argparse here; the database stack is imported when a command runs."""

from __future__ import annotations

import argparse


def cmd_db(args: argparse.Namespace) -> int:
    from alembic.util import CommandError
    from sqlalchemy import create_engine

    from service.records.schema import current_revision, downgrade, ensure_schema, head_revision
    from tuner_cli.serve import settings_from_env

    settings = settings_from_env()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.resolved_database_url)
    try:
        with engine.begin() as conn:
            if args.action == "downgrade" and args.revision != "base":
                _check_revision(args.revision, CommandError)
            if args.action == "upgrade":
                ensure_schema(conn)
            elif args.action == "downgrade":
                downgrade(conn, args.revision)
            print(f"records at revision {current_revision(conn) or 'none (no tables)'}; latest {head_revision()}")
    finally:
        engine.dispose()
    return 0


def _check_revision(revision: str, error: type[Exception]) -> None:
    from alembic.script import ScriptDirectory

    from service.records.schema import alembic_config
    from tuner_model.core.errors import TunerError

    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    except error as e:
        raise TunerError(f"no revision {revision!r} ({e})") from None


def register(sub: argparse._SubParsersAction) -> None:
    """Adds `tuner db current|upgrade|downgrade REV`."""
    d = sub.add_parser("db", help="the records' schema revision (TUNER_DATABASE_URL or the data dir's SQLite)")
    d.add_argument("action", choices=["current", "upgrade", "downgrade"])
    d.add_argument("revision", nargs="?", default="base", help="downgrade: the revision to go back to (base: none)")
    d.set_defaults(func=cmd_db)
