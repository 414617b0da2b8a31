"""The caller's images a page at a time, and a job's progress as Server-Sent Events, over real HTTP."""

from __future__ import annotations

import json
import time
from pathlib import Path

from live import live_api

from service.access.keys import create_key
from service.records import Database, Image
from service.settings import Settings


def _image(i: int, tenant: str) -> Image:
    return Image(id=f"img_{tenant}_{i:03d}", tenant=tenant, width=8, height=8, channels=3, bytes=100, bpp=12.5,
                 psnr=30.0, parameters=50, params={}, blob_digest="0" * 64, source="upload", job_id=None,
                 created_at=1000.0 + i // 2)  # pairs share a time: the id breaks the tie


def test_images_are_listed_newest_first_a_page_at_a_time(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, rate_limit_per_s=0, render_compile=False)
    db = Database(settings.resolved_database_url)
    keys = {t: {"Authorization": f"Bearer {create_key(db, t)[1]}"} for t in ("alice", "bob")}
    for i in range(7):
        db.add_image(_image(i, "alice"))
    db.add_image(_image(0, "bob"))
    with live_api(settings) as c:
        seen, cursor, pages = [], None, 0
        while True:
            r = c.get("/v1/images", params={"limit": 3, **({"cursor": cursor} if cursor else {})},
                      headers=keys["alice"])
            assert r.status_code == 200, r.text
            body = r.json()
            seen += [i["image_id"] for i in body["items"]]
            pages += 1
            cursor = body["next"]
            if cursor is None:
                break
        assert pages == 3 and seen == [f"img_alice_{i:03d}" for i in range(6, -1, -1)]
        assert [i["image_id"] for i in c.get("/v1/images", headers=keys["bob"]).json()["items"]] == ["img_bob_000"]
        assert c.get("/v1/images", params={"cursor": "not-one"}, headers=keys["bob"]).status_code == 422
        assert c.get("/v1/images").status_code == 401


def test_job_events_stream_until_the_job_ends(tmp_path: Path, parrots_path: Path) -> None:
    with live_api(Settings(data_dir=tmp_path, rate_limit_per_s=0, render_compile=False)) as c:
        job = c.post("/v1/images?steps=30", content=parrots_path.read_bytes(),
                     headers={"content-type": "image/png"}).json()["job_id"]
        assert c.get("/v1/jobs/job_nope/events").status_code == 404
        events: list[dict] = []
        started = time.monotonic()
        with c.stream("GET", f"/v1/jobs/{job}/events") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    if len(events) == 1:  # no worker runs: it stays queued until cancelled
                        assert c.delete(f"/v1/jobs/{job}").status_code == 202
        assert [e["status"] for e in events] == ["queued", "cancelled"]  # and then the stream ended
        assert events[0]["job_id"] == job and time.monotonic() - started < 10


def test_event_streams_end_on_revocation_and_are_capped(tmp_path: Path, parrots_path: Path) -> None:
    """Issue 24, item 11: an open stream ends (with `event: error`) once its key is revoked; a tenant's open
    streams are capped (429 beyond)."""
    import threading

    from service.access.keys import create_key
    from service.records import Database

    settings = Settings(data_dir=tmp_path, rate_limit_per_s=0, render_compile=False, event_streams_per_tenant=1,
                        event_stream_recheck_s=0.5)
    db = Database(settings.resolved_database_url)
    record, key = create_key(db, "alice")
    auth = {"Authorization": f"Bearer {key}"}
    with live_api(settings) as c:
        job = c.post("/v1/images?steps=30", content=parrots_path.read_bytes(),
                     headers={"content-type": "image/png", **auth}).json()["job_id"]
        lines: list[str] = []
        started = time.monotonic()
        with c.stream("GET", f"/v1/jobs/{job}/events", headers=auth) as r:
            assert r.status_code == 200
            assert c.get(f"/v1/jobs/{job}/events", headers=auth).status_code == 429  # one stream each
            threading.Timer(1.0, db.revoke_key, args=(record.id,)).start()
            for line in r.iter_lines():
                lines.append(line)
        assert "event: error" in lines and any("revoked" in line for line in lines)
        assert time.monotonic() - started < 10
