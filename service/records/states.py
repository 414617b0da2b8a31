"""The states a job goes through and the outcomes the records' operations answer with. StrEnums: stored in
the database and shown in JSON as the same plain strings."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED,
                                                 JobState.FAILED, JobState.CANCELLED)
ACTIVE = (QUEUED, RUNNING)
STATES = tuple(JobState)


class ClaimOutcome(StrEnum):
    """What `claim_job` did: took the job, or why not."""

    CLAIMED = "claimed"
    BUSY = "busy"  # a live worker has it (a duplicate delivery)
    DONE = "done"  # already finished
    EXHAUSTED = "exhausted"  # interrupted too often: failed now
    MISSING = "missing"


class HeartbeatState(StrEnum):
    """What a heartbeat learnt about its job."""

    OK = "ok"
    CANCEL = "cancel"  # a cancel was requested
    LOST = "lost"  # no longer this worker's: re-queued as stale or finished elsewhere
