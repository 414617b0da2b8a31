"""A render's query as image services take it: unknown parameters refused (422, never silently the full
size), the imgix/imgproxy short names (w, h, q, fm), format names in any case with jpg, dpr, named presets
from the settings, and a signed URL made from any of these spelling the render canonically."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import ValidationError

from service.api.app import create_app
from service.settings import Settings
from tuner_model.rate.encode import encode
from tuner_model.rate.request import EncodeSettings

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def blob(parrots: np.ndarray) -> bytes:
    return encode(parrots, EncodeSettings(steps=20, device="cpu", effort=1))[1]


@pytest.fixture()
def render(tmp_path: Path, blob: bytes):
    settings = Settings(data_dir=tmp_path, render_compile=False, rate_limit_per_s=0, comparisons=False,
                        signing_keys="k1-0123456789abcdef",
                        render_presets={"small": {"width": 48, "format": "webp"}, "sq": {"width": 32, "height": 32,
                                                                                         "fit": "cover"}})
    with TestClient(create_app(settings)) as c:
        image_id = c.post("/v1/blobs", content=blob, headers={"content-type": "application/octet-stream"}).json()[
            "image_id"]
        c.image_id = image_id  # type: ignore[attr-defined]

        def get(query: str, **headers: str):  # noqa: ANN202
            return c.get(f"/v1/images/{image_id}/render?{query}", headers=headers)

        get.client = c  # type: ignore[attr-defined]
        yield get


def _size(r) -> tuple[int, int]:  # noqa: ANN001
    assert r.status_code == 200, r.text
    size = Image.open(io.BytesIO(r.content)).size
    assert size == (int(r.headers["x-result-width"]), int(r.headers["x-result-height"]))
    return size


def _refused(r, *words: str) -> dict:  # noqa: ANN001
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    for w in words:
        assert w in body["detail"], body
    return body


def test_unknown_parameters_are_refused_not_ignored(render) -> None:  # noqa: ANN001
    body = _refused(render("wdth=50"), "wdth", "width")
    assert body["errors"] == [{"loc": ["query", "wdth"], "msg": "unknown parameter"}]
    _refused(render("width=50&size=3&x=1"), "size", "x")
    assert _size(render("width=50")) == (50, 33)


def test_short_names_are_the_same_parameters(render) -> None:  # noqa: ANN001
    assert _size(render("w=50")) == (50, 33)  # never the full size
    assert _size(render("h=32")) == (48, 32)
    r = render("w=50&fm=jpg&q=70")
    assert r.headers["content-type"] == "image/jpeg" and _size(r) == (50, 33)
    assert render("w=50&fm=jpg&q=70").headers["etag"] == render("width=50&format=jpeg&quality=70").headers["etag"]
    assert _size(render("w=50&width=50")) == (50, 33)
    _refused(render("w=50&width=60"), "w and width")


def test_format_names_in_any_case_and_jpg(render) -> None:  # noqa: ANN001
    for name, media in (("JPG", "image/jpeg"), ("jpg", "image/jpeg"), ("Jpeg", "image/jpeg"), ("WEBP", "image/webp"),
                        ("PNG", "image/png")):
        r = render(f"width=20&format={name}")
        assert r.status_code == 200 and r.headers["content-type"] == media, (name, r.text)
    r = render("width=20&format=AUTO", accept="image/webp")
    assert r.headers["content-type"] == "image/webp" and "Accept" in r.headers["vary"].split(", ")
    assert render("width=20&format=gif").status_code == 422


def test_dpr_multiplies_the_size_and_the_limits_apply(render) -> None:  # noqa: ANN001
    assert _size(render("width=40&dpr=2")) == (80, 53)
    assert _size(render("dpr=2")) == (192, 128)  # the native size, twice
    assert _size(render("width=40&height=40&fit=fill&dpr=1.5")) == (60, 60)
    assert render("width=40&dpr=2").headers["etag"] == render("width=80").headers["etag"]
    _refused(render("width=40&dpr=9"))
    _refused(render("width=40&dpr=0"))
    _refused(render("width=5000&dpr=2"), "over the render limits")


def test_named_presets_from_the_settings(render) -> None:  # noqa: ANN001
    r = render("preset=small")
    assert r.headers["content-type"] == "image/webp" and _size(r) == (48, 32)
    assert _size(render("preset=sq")) == (32, 32)
    assert _size(render("preset=small&width=24")) == (24, 16)  # the query wins over the preset
    assert render("preset=small&format=png").headers["content-type"] == "image/png"
    _refused(render("preset=thumb"), "no preset 'thumb'", "small, sq")


def test_presets_are_checked_at_start(tmp_path: Path) -> None:
    assert set(Settings(data_dir=tmp_path).render_presets) == {"thumb", "preview"}  # the defaults
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, render_presets={"bad": {"widht": 10}})
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, render_presets={"bad name": {"width": 10}})


def test_signed_url_spells_the_render_canonically(render) -> None:  # noqa: ANN001
    c = render.client
    r = c.get(f"/v1/images/{c.image_id}/render-url?w=50&fm=JPG&expires_in=60")
    assert r.status_code == 200, r.text
    url = r.json()["url"]
    assert "width=50" in url and "format=jpeg" in url and "w=" not in url.split("?")[1].split("&")[0]
    signed = c.get(url)
    assert signed.status_code == 200 and signed.headers["content-type"] == "image/jpeg"
    preset = c.get(c.get(f"/v1/images/{c.image_id}/render-url?preset=small").json()["url"])
    assert preset.headers["content-type"] == "image/webp" and _size(preset) == (48, 32)
    _refused(c.get(f"/v1/images/{c.image_id}/render-url?width=50&expires=60"), "expires")
