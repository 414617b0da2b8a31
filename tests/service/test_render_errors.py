"""The renderer speaks no HTTP (issue 26): it raises its own errors (service/api/render_errors.py) and
service/api/problems.py answers each with the problem+json that the render routes answered before, the
ProblemError the renderer used to raise itself: status, type, title, detail and Retry-After. And a render's
size is the library's rule (core/geometry.py) under the service's caps; a crop is checked by Crop alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api import problems
from service.api.problem_types import problem_type
from service.api.problems import RENDER_PROBLEMS, ProblemError
from service.api.render import RenderAsk, parse_crop, plan
from service.api.render_errors import BadCrop, OverLimits, RenderBusy, RenderError, RenderGone, RenderTimeout
from service.settings import Settings
from tuner_model.core.errors import ConfigError
from tuner_model.core.geometry import FULL, Crop, output_size
from tuner_model.render.direct import render_size

# Each error of the renderer beside the ProblemError it raised before issue 26.
CASES = [
    (RenderBusy("too many renders waiting; retry shortly", retry_after_s=2),
     ProblemError(429, "too many renders waiting; retry shortly", headers={"Retry-After": "2"},
                  problem="render-busy")),
    (RenderBusy("the render waited 3 s for a free renderer; retry shortly", retry_after_s=5),
     ProblemError(429, "the render waited 3 s for a free renderer; retry shortly", headers={"Retry-After": "5"},
                  problem="render-busy")),
    (RenderGone("the client went away before its render started"),
     ProblemError(499, "the client went away before its render started")),
    (RenderTimeout("the render ran past its time limit (2 s); ask for a smaller size", retry_after_s=60),
     ProblemError(503, "the render ran past its time limit (2 s); ask for a smaller size",
                  headers={"Retry-After": "60"}, problem="render-timeout")),
    (OverLimits("5000x10 is over the render limits"),
     ProblemError(422, "5000x10 is over the render limits", problem="render-limit")),
    (BadCrop("crop must be four comma-separated fractions: left,top,right,bottom"),
     ProblemError(422, "crop must be four comma-separated fractions: left,top,right,bottom")),
]


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    problems.install(app)

    @app.get("/raise/{i}/{kind}")
    def _raise(i: int, kind: str) -> None:
        raise CASES[i][0 if kind == "new" else 1]

    return TestClient(app)


@pytest.mark.parametrize("i", range(len(CASES)), ids=[type(c[0]).__name__ for c in CASES])
def test_each_render_error_answers_as_its_problem_did(client: TestClient, i: int) -> None:
    new, old = client.get(f"/raise/{i}/new"), client.get(f"/raise/{i}/old")
    assert new.status_code == old.status_code == CASES[i][1].status_code
    assert new.headers["content-type"] == old.headers["content-type"] == problems.PROBLEM_JSON
    for header in ("retry-after", "cache-control"):
        assert new.headers.get(header) == old.headers.get(header)
    assert {**new.json(), "instance": None} == {**old.json(), "instance": None}


def test_every_render_error_has_a_problem_of_its_status() -> None:
    kinds = {BadCrop, OverLimits, RenderBusy, RenderGone, RenderTimeout}
    assert set(RENDER_PROBLEMS) == kinds and all(issubclass(k, RenderError) for k in kinds)
    for status, name in RENDER_PROBLEMS.values():
        problem_type(status, name)  # an unknown name, or one of another status, fails here


def test_a_crop_is_checked_in_one_place() -> None:
    assert parse_crop(None) == FULL and parse_crop("0,0.25,0.5,1") == Crop(0, 0.25, 0.5, 1)
    with pytest.raises(ConfigError) as library:
        Crop(0.5, 0, 0.2, 1)
    with pytest.raises(BadCrop) as service:
        parse_crop("0.5,0,0.2,1")
    assert service.value.detail == str(library.value)


def test_the_plan_sizes_by_the_librarys_rule_under_the_service_caps(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, max_render_width=1000, max_render_height=1000)
    native, crop = (96, 64), Crop(0.0, 0.0, 0.5, 0.75)
    for width, height in ((None, None), (40, None), (None, 40), (50, 50)):
        p = plan(native, RenderAsk(width=width, height=height, fit="fill", crop="0,0,0.5,0.75"), "png", settings)
        assert (p.width, p.height) == output_size(native, width, height, crop) == render_size(native, width, height,
                                                                                               crop)
    contain = plan(native, RenderAsk(width=50, height=50, crop="0,0,0.5,0.75"), "png", settings)
    assert (contain.width, contain.height) == output_size(native, 50, 50, crop, "contain") == (50, 50)
    dpr = plan(native, RenderAsk(dpr=2.0), "png", settings)
    assert (dpr.width, dpr.height) == output_size(native, None, None, FULL, scale=2.0) == (192, 128)
    with pytest.raises(OverLimits, match="over the render limits"):
        plan(native, RenderAsk(width=1001), "png", settings)
