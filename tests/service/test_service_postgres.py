"""`tuner api` + `tuner worker` with their records in PostgreSQL (a fresh database for the test) and real
Redis as the broker: the README's flow works, and the rows live in PostgreSQL, not in a SQLite file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pg_fixtures import postgres_url  # noqa: F401 - a fixture
from test_service_e2e import FAST, Proc, encode_and_render, free_port, wait_ready

from service.records import SUCCEEDED, Database


def test_api_and_worker_on_postgres(redis_url: str, postgres_url: str, tmp_path: Path,  # noqa: F811
                                    parrots_path: Path, parrots: np.ndarray) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    data_dir = tmp_path / "data"
    env = {**FAST, "TUNER_BROKER_URL": redis_url, "TUNER_DATA_DIR": str(data_dir),
           "TUNER_DATABASE_URL": postgres_url}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = Proc(["api", "--port", str(port)], env, tmp_path / "api.log")
    worker = Proc(["worker"], env, tmp_path / "worker.log")
    try:
        wait_ready(base, api)
        image_id = encode_and_render(base, parrots_path, parrots, steps=60)
    finally:
        api.stop()
        worker.stop()
    db = Database(postgres_url)
    img = db.get_image(image_id)
    assert img is not None and (img.width, img.height) == (96, 64)
    job = db.get_job(img.job_id)
    assert job.status == SUCCEEDED and job.attempts == 1 and job.sent_at is not None
    assert not (data_dir / "tuner.sqlite").exists()
    db.engine.dispose()  # so the fixture can drop the database
