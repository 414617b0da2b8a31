"""The blob lock of service/records/images.py on both databases (SQLite and a real PostgreSQL): a delete of
the last image referencing a blob waits for a writer that is referencing the same blob, so it sees the new
row and keeps the blob; and a blob dropped before a writer references it is written again by the writer."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pg_fixtures import postgres_url  # noqa: F401 - a fixture

from service.records import Database, Image


def _image(image_id: str, tenant: str, digest: str) -> Image:
    return Image(id=image_id, tenant=tenant, width=8, height=8, channels=3, bytes=10, bpp=1.0, psnr=30.0,
                 parameters=10, params={}, blob_digest=digest, source="upload", job_id=None, created_at=time.time())


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "postgres":
        return Database(request.getfixturevalue("postgres_url"))
    return Database(f"sqlite:///{tmp_path / 'r.sqlite'}")


def test_delete_waits_for_a_writer_of_the_same_blob(db: Database) -> None:
    digest = "ab" * 32
    stored = {digest}
    db.add_image_with_blob(_image("img_a", "alice", digest), lambda d: stored.add(d))
    inside, release = threading.Event(), threading.Event()

    def ensure(d: str) -> None:  # the writer holds the lock here, its row inserted but not committed
        inside.set()
        release.wait(10)
        stored.add(d)

    writer = threading.Thread(target=db.add_image_with_blob, args=(_image("img_b", "bob", digest), ensure))
    writer.start()
    assert inside.wait(10)
    deleted: list[Image | None] = []
    deleter = threading.Thread(target=lambda: deleted.append(db.delete_image_and_blob("img_a", stored.discard)))
    deleter.start()
    time.sleep(0.5)
    assert deleter.is_alive(), "the delete did not wait for the writer's lock"
    release.set()
    writer.join(10)
    deleter.join(10)
    assert deleted[0] is not None and deleted[0].id == "img_a"
    assert digest in stored and db.get_image("img_b") is not None
    # The last reference: the blob is dropped with it.
    assert db.delete_image_and_blob("img_b", stored.discard) is not None
    assert digest not in stored


def test_a_blob_dropped_before_the_row_is_written_again(db: Database) -> None:
    digest = "cd" * 32
    stored = {digest}
    db.add_image_with_blob(_image("img_a", "alice", digest), stored.add)
    db.delete_image_and_blob("img_a", stored.discard)  # bob's fit wrote the blob before this; its row after
    assert digest not in stored
    db.add_image_with_blob(_image("img_b", "bob", digest), stored.add)
    assert digest in stored
    assert db.drop_blob_if_unreferenced(digest, stored.discard) is False
