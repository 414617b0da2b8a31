"""API keys and the tenants they belong to.

A key is `tnr_` + 32 random bytes (URL-safe base64); only its SHA-256 is stored. A request names its key with
`Authorization: Bearer <key>` and acts as the key's tenant. A service with no keys at all (and no bootstrap
key) is open, for local use: every request is the local tenant.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Literal

from service.records import LOCAL_TENANT, ApiKey, Database
from service.settings import Settings

KEY_PREFIX = "tnr_"
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CHECK_EVERY_S = 2.0  # how long "are there any keys?" is remembered (a key created elsewhere turns auth on)


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a tenant, by which means, and the key's public id when a key was used."""

    tenant: str
    via: Literal["key", "open", "signature"]
    key_id: str | None = None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_tenant(name: str) -> str:
    if not TENANT_PATTERN.match(name):
        raise ValueError("a tenant is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def create_key(db: Database, tenant: str, label: str = "") -> tuple[ApiKey, str]:
    """A new key for `tenant`: its record and the key itself, which is shown once and never stored."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(id="key_" + uuid.uuid4().hex[:16], tenant=check_tenant(tenant), key_hash=hash_key(key),
                    label=label[:200], created_at=time.time(), revoked_at=None)
    return db.add_key(record), key


class KeyRing:
    """Resolves a presented key to its tenant, and says whether the service needs keys at all."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings, self.db = settings, db
        boot = settings.bootstrap_key.get_secret_value() if settings.bootstrap_key else None
        self._bootstrap = hash_key(boot) if boot else None
        self._checked: tuple[float, bool] | None = None

    def lookup(self, key: str) -> Principal | None:
        digest = hash_key(key)
        if self._bootstrap is not None and secrets.compare_digest(digest, self._bootstrap):
            return Principal(self.settings.bootstrap_tenant, "key", "bootstrap")
        found = self.db.find_key(digest)
        return Principal(found.tenant, "key", found.id) if found is not None else None

    def still_valid(self, key_id: str) -> bool:
        """Whether the key that minted a signed URL still stands (not revoked; the bootstrap key: still set)."""
        if key_id == "bootstrap":
            return self._bootstrap is not None
        found = self.db.get_key(key_id)
        return found is not None and found.revoked_at is None

    def required(self) -> bool:
        """Whether requests need a key: TUNER_AUTH=on, or (auto) a bootstrap key is set or a key was ever
        created."""
        mode = self.settings.auth
        if mode != "auto":
            return mode == "on"
        if self._bootstrap is not None:
            return True
        now = time.monotonic()
        if self._checked is None or now - self._checked[0] > _CHECK_EVERY_S:
            self._checked = (now, self.db.any_key())
        return self._checked[1]


OPEN = Principal(LOCAL_TENANT, "open")
