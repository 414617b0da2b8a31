"""Queries of API keys: create, find by hash, list, revoke."""

from __future__ import annotations

import time

from sqlalchemy import func, select, update

from service.records.engine import Records
from service.records.tables import ApiKey


class KeyRecords(Records):
    def add_key(self, key: ApiKey) -> ApiKey:
        with self.session() as s:
            s.add(key)
        return key

    def find_key(self, key_hash: str) -> ApiKey | None:
        """The active (not revoked) key with this hash."""
        with self.session() as s:
            return s.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))).first()

    def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        with self.session() as s:
            query = select(ApiKey).order_by(ApiKey.created_at)
            if tenant is not None:
                query = query.where(ApiKey.tenant == tenant)
            return list(s.scalars(query))

    def get_key(self, key_id: str) -> ApiKey | None:
        with self.session() as s:
            return s.get(ApiKey, key_id)

    def revoke_key(self, key_id: str) -> ApiKey | None:
        """Revokes a key (at once: every request looks its key up). None when there is no such key."""
        with self.session() as s:
            s.execute(update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                      .values(revoked_at=time.time()))
            return s.get(ApiKey, key_id)

    def any_key(self) -> bool:
        """Whether a key was ever created (revoked ones count: revoking every key must lock the service, not
        open it)."""
        with self.session() as s:
            return bool(s.scalar(select(func.count()).select_from(ApiKey)))
