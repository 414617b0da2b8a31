"""Durable job and image records (SQLAlchemy; SQLite under the data dir by default). Redis is only the
broker: these rows are the truth about every accepted job and every finished image.

tables.py (the models), states.py (job states and outcomes as enums), schema.py (creating and upgrading the
schema), engine.py (engines and sessions per process), jobs.py, tiles.py (a job fitted as tiles), images.py
and keys.py (the queries)."""

from service.records.admission import AdmissionRecords
from service.records.fair import FairRecords
from service.records.images import ImageRecords
from service.records.jobs import JobRecords
from service.records.keys import KeyRecords
from service.records.states import (
    ACTIVE,
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    STATES,
    SUCCEEDED,
    ClaimOutcome,
    HeartbeatState,
    JobState,
)
from service.records.tables import LOCAL_TENANT, ApiKey, IdempotencyKey, Image, Job, JobTile, new_job_id
from service.records.tiles import TileRecords
from service.records.workers import WorkerRecords


class Database(JobRecords, TileRecords, ImageRecords, KeyRecords, WorkerRecords, FairRecords, AdmissionRecords):
    """One process's records: the job, tile, image, key and worker-liveness queries over one engine."""


__all__ = ["ACTIVE", "CANCELLED", "FAILED", "LOCAL_TENANT", "QUEUED", "RUNNING", "STATES", "SUCCEEDED", "ApiKey",
           "ClaimOutcome", "Database", "HeartbeatState", "IdempotencyKey", "Image", "Job", "JobState", "JobTile",
           "new_job_id"]
