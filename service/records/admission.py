"""A job row inserted only if its admission checks still pass, in the same transaction, under its tenant's
lock (service/submit.py): uploads racing each other can't all pass the pending-job and quota checks on the
same stale counts."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from sqlalchemy.exc import IntegrityError

from service.records.engine import Records
from service.records.images import lock_row
from service.records.tables import IdempotencyKey, Job


def tenant_lock_key(tenant: str) -> str:
    """The lock row of a tenant's admissions (the blob-lock table's key space: 64 hex digits)."""
    return hashlib.sha256(f"tenant-admission|{tenant}".encode()).hexdigest()


class AdmissionRecords(Records):
    def add_job_admitted(self, job: Job, idempotency_key: str | None, fingerprint: str | None,
                         admit: Callable[[], None]) -> Job:
        """Inserts `job` (and its idempotency key) after `admit()` passes, holding the tenant's lock from
        before the checks to the commit (on SQLite the write lock: admissions are serialised). `admit` raises
        to refuse. When the idempotency key was stored meanwhile by a concurrent request, that request's job
        is returned instead."""
        try:
            with self.session() as s:
                lock_row(s, tenant_lock_key(job.tenant))
                admit()
                s.add(job)
                if idempotency_key:
                    s.add(IdempotencyKey(key=idempotency_key, fingerprint=fingerprint or "", job_id=job.id,
                                         created_at=time.time()))
        except IntegrityError:
            found = self.get_idempotency(idempotency_key or "")  # type: ignore[attr-defined]
            if found is None:
                raise
            existing = self.get_job(found.job_id)  # type: ignore[attr-defined]
            assert existing is not None
            return existing
        return job
