"""`tuner keys create|list|revoke` and `tuner sign`: the service's access control from the command line.
They act on the database and settings the API uses (TUNER_* environment variables)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from tuner_model.core.errors import TunerError


def _db():  # noqa: ANN202
    from service.records import Database
    from tuner_cli.serve import settings_from_env

    settings = settings_from_env()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Database(settings.resolved_database_url)


def _when(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_keys_create(args: argparse.Namespace) -> int:
    from service.access.keys import create_key

    try:
        record, key = create_key(_db(), args.tenant, args.label or "")
    except ValueError as e:
        raise TunerError(str(e)) from None
    if args.json:
        print(json.dumps({"id": record.id, "tenant": record.tenant, "key": key}))
    else:
        print(f"created {record.id} for tenant {record.tenant!r}; the key (shown once, keep it secret):\n{key}")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    keys = _db().list_keys(args.tenant)
    rows = [{"id": k.id, "tenant": k.tenant, "label": k.label, "created": _when(k.created_at),
             "revoked": _when(k.revoked_at)} for k in keys]
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no keys (the service is open to anyone while it has none: `tuner keys create --tenant NAME`)")
        return 0
    for r in rows:
        state = f"revoked {r['revoked']}" if r["revoked"] else "active"
        print(f"{r['id']}  {r['tenant']:<20} {state:<29} created {r['created']}  {r['label']}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    key = _db().revoke_key(args.id)
    if key is None:
        raise TunerError(f"no key {args.id!r} (`tuner keys list` shows them)")
    print(f"revoked {key.id} (tenant {key.tenant!r})")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    from service.access.signing import sign
    from tuner_cli.serve import settings_from_env

    settings = settings_from_env()
    keys = settings.signing_key_bytes
    expires_in = args.expires_in if args.expires_in is not None else settings.signed_url_ttl_s
    if expires_in > settings.signed_url_max_ttl_s:
        raise TunerError(f"--expires-in {expires_in}: the service refuses signed URLs valid for more than "
                         f"{settings.signed_url_max_ttl_s} s (TUNER_SIGNED_URL_MAX_TTL_S)")
    if not keys:
        raise TunerError("no signing keys: set TUNER_SIGNING_KEYS (comma-separated, 16+ characters each)")
    if not args.path.startswith("/"):
        raise TunerError("give the path and query to sign, e.g. '/v1/images/ID/render?width=256'")
    url = sign(args.path, keys, expires_in)
    print(args.base.rstrip("/") + url if args.base else url)
    return 0


def register(sub: argparse._SubParsersAction, parser_class: type[argparse.ArgumentParser]) -> None:
    """Adds `tuner keys` and `tuner sign`."""
    from tuner_cli.args import positive_int

    k = sub.add_parser("keys", help="API keys: create, list, revoke (the service's database, TUNER_* settings)")
    ksub = k.add_subparsers(dest="keys", required=True, parser_class=parser_class)
    c = ksub.add_parser("create", help="a new key for a tenant (printed once)")
    c.add_argument("--tenant", required=True)
    c.add_argument("--label", default="")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_keys_create)
    ls = ksub.add_parser("list", help="every key (never the secrets)")
    ls.add_argument("--tenant")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_keys_list)
    r = ksub.add_parser("revoke", help="revoke a key at once")
    r.add_argument("id")
    r.set_defaults(func=cmd_keys_revoke)

    s = sub.add_parser("sign", help="sign a render URL (TUNER_SIGNING_KEYS)")
    s.add_argument("path", help="e.g. '/v1/images/ID/render?width=256&format=webp'")
    s.add_argument("--expires-in", type=positive_int,
                   help="seconds until the URL expires (default: TUNER_SIGNED_URL_TTL_S, one day; "
                   "at most TUNER_SIGNED_URL_MAX_TTL_S)")
    s.add_argument("--base", help="prefix, e.g. https://img.example.com")
    s.set_defaults(func=cmd_sign)
