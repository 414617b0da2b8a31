"""Issue 24, item 15, over real HTTP: every answer carries a CSP, no framing, nosniff and no referrer; the page
and the API reference (served from the package: no CDN script on the origin that keeps the key) carry their
own same-origin CSP with frame-ancestors 'none'; the loopback check is exact."""

from __future__ import annotations

from pathlib import Path

import pytest
from live import live_api

from service.settings import Settings
from tuner_cli.serve import check_exposure, is_loopback
from tuner_model.core.errors import TunerError


def test_every_answer_has_security_headers(tmp_path: Path) -> None:
    with live_api(Settings(data_dir=tmp_path, render_compile=False)) as c:
        for path in ("/", "/docs", "/redoc", "/v1/access", "/healthz", "/v1/images/img_nope", "/openapi.json",
                     "/static/app.js"):
            r = c.get(path)
            assert r.headers["x-frame-options"] == "DENY", path
            assert r.headers["x-content-type-options"] == "nosniff", path
            assert r.headers["referrer-policy"] == "no-referrer", path
            csp = r.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp, path
        assert "sandbox" in c.get("/v1/access").headers["content-security-policy"]
        for path in ("/docs", "/redoc"):
            page = c.get(path)
            assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
            assert "cdn" not in page.text.lower() and "https://" not in page.text
            assert "/static/docs.js" in page.text
        assert c.get("/static/docs.js").status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["127.evil.example", "127.0.0.1.nip.io", "0.0.0.0", "10.0.0.1", "localhost.com"])
def test_not_loopback_needs_keys(host: str, tmp_path: Path) -> None:
    assert not is_loopback(host)
    with pytest.raises(TunerError, match="without API keys"):
        check_exposure(Settings(data_dir=tmp_path), host)
