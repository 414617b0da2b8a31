"""Which queued job runs next, fairly across tenants (worker/run.py): one tenant's hundred pending jobs must
not hold the workers while another tenant's one job waits behind them."""

from __future__ import annotations

from sqlalchemy import func, select

from service.records.engine import Records
from service.records.states import QUEUED, RUNNING
from service.records.tables import Job


class FairRecords(Records):
    def fair_next_job(self, max_attempts: int) -> str | None:
        """The queued job to run next: of the tenant with the fewest running jobs, then the one served longest
        ago (its latest start; never served first), then the one whose oldest queued job is oldest; that
        tenant's oldest queued job. None when nothing is queued."""
        waiting = (Job.status == QUEUED, Job.attempts < max_attempts)
        with self.session() as s:
            queued = (select(Job.tenant.label("tenant"), func.min(Job.created_at).label("oldest"))
                      .where(*waiting).group_by(Job.tenant).subquery())
            running = (select(Job.tenant.label("tenant"), func.count().label("n"))
                       .where(Job.status == RUNNING).group_by(Job.tenant).subquery())
            served = (select(Job.tenant.label("tenant"), func.max(Job.started_at).label("last"))
                      .where(Job.tenant.in_(select(queued.c.tenant)), Job.started_at.is_not(None))
                      .group_by(Job.tenant).subquery())
            tenant = s.scalar(
                select(queued.c.tenant)
                .outerjoin(running, running.c.tenant == queued.c.tenant)
                .outerjoin(served, served.c.tenant == queued.c.tenant)
                .order_by(func.coalesce(running.c.n, 0), func.coalesce(served.c.last, 0.0), queued.c.oldest,
                          queued.c.tenant)
                .limit(1))
            if tenant is None:
                return None
            return s.scalar(select(Job.id).where(*waiting, Job.tenant == tenant)
                            .order_by(Job.created_at, Job.id).limit(1))
