"""schemathesis against the real app over real HTTP, every check it has: no 5xx, every answer's status,
media type, headers and body as the OpenAPI says, invalid input refused, and auth not ignored. Bounded
examples per operation, so it runs in seconds; keys on, as in production."""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from live import live_api
from schemathesis.config import SchemathesisConfig

from service.access.keys import create_key
from service.records import Database
from service.settings import Settings

EXAMPLES = 25
# Schema-valid requests the API may still refuse, for what a schema can't say: bytes that are no image (415),
# an image that doesn't decode, both a bpp and a psnr target, a fit estimated past the time limit (422), a body
# over the upload limit (413). The defaults (2xx, 3xx, 401, 403, 404, 409, 429, 5xx) plus these three.
CONFIG = SchemathesisConfig.from_dict({"checks": {"positive_data_acceptance": {
    "expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "413", "415", "422", "429", "5xx"]}}})


def test_api_conforms_to_its_openapi(tmp_path: Path) -> None:
    """Every operation, EXAMPLES generated requests each (derandomized: the same requests every run), all of
    schemathesis's checks. Hypothesis is driven directly: schemathesis's pytest plugin does not run on pytest 9."""
    settings = Settings(data_dir=tmp_path, rate_limit_per_s=0, render_compile=False, auth_failures_per_minute=0,
                        signing_keys="fuzz-signing-key-0001", max_upload_bytes=64 * 1024, max_render_width=256,
                        max_render_height=256, max_render_pixels=65536, max_steps=50)
    auth = {"Authorization": f"Bearer {create_key(Database(settings.resolved_database_url), 'fuzz')[1]}"}
    failures: list[str] = []
    with live_api(settings) as client:
        schema = schemathesis.openapi.from_url(f"{client.base_url}/openapi.json", config=CONFIG)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 12
        for op in operations:
            @given(case=op.as_strategy())
            @hsettings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                       derandomize=True)
            def run(case: schemathesis.Case) -> None:
                case.call_and_validate(headers=auth)

            try:
                run()
            except Exception as e:  # noqa: BLE001 - collect every operation's failure, then report them all
                failures.append(f"{op.label}: {e}")
    assert not failures, "\n\n".join(failures)


def test_openapi_says_the_truth(tmp_path: Path) -> None:
    with live_api(Settings(data_dir=tmp_path, rate_limit_per_s=0, render_compile=False)) as c:
        doc = c.get("/openapi.json").json()
        get_image = doc["paths"]["/v1/images/{image_id}"]["get"]
        assert set(get_image["responses"]["404"]["content"]) == {"application/problem+json"}
        assert "401" in get_image["responses"] and "429" in get_image["responses"]
        assert {"apiKey": []} in get_image["security"]
        assert doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
        assert "HTTPValidationError" not in doc["components"]["schemas"]
        render = {p["name"]: p for p in doc["paths"]["/v1/images/{image_id}/render"]["get"]["parameters"]}
        assert render["width"]["schema"]["anyOf"][0]["minimum"] == 1 and "sig" in render and "exp" in render
        r = c.put("/v1/images/img_x")
        assert r.status_code == 405 and r.headers["content-type"].startswith("application/problem+json")
        assert set(r.headers["allow"].split(", ")) >= {"GET", "DELETE"}
