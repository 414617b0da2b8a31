"""Examples of the response bodies, for the OpenAPI (service/api/schemas.py shows them on every operation that
answers with the model). Plain data: what a client would see for a 768x512 photo sent with no parameters."""

from __future__ import annotations

from typing import Any

JOB = "job_4f1c2a9e8b7d4c3a2b1c0d9e"
IMG = "img_9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"
PARAMS = {"bpp": None, "psnr": None, "steps": None, "effort": 4}
LINKS = {"job": f"/v1/jobs/{JOB}", "image": f"/v1/images/{IMG}", "weights": f"/v1/images/{IMG}/weights",
         "render": f"/v1/images/{IMG}/render"}

EXAMPLES: dict[str, dict[str, Any]] = {
    "ProblemTypeOut": {"type": "/problems/time-limit", "status": 422, "title": "Fit over the time limit",
                       "description": "the fit is estimated to run past the workers' time limit; lower the effort or "
                                      "the rate, or send a smaller image"},
    "SignedUrl": {"url": f"/v1/images/{IMG}/render?width=512&format=webp&exp=1798000000&sig=c2lnbmF0dXJl",
                  "expires_at": "2026-12-23T10:13:20Z"},
    "JobAccepted": {"job_id": JOB, "image_id": IMG, "status": "queued", "deduplicated": False, "width": 768,
                    "height": 512, "params": PARAMS, "tiles": 1, "eta_s": 900.8, "links": {"job": f"/v1/jobs/{JOB}"}},
    "JobOut": {"job_id": JOB, "image_id": IMG, "status": "running", "progress": 0.42, "step": 2100, "steps": 5000,
               "psnr": 31.2, "error": None, "attempts": 1, "params": PARAMS, "created_at": "2026-12-07T10:00:00Z",
               "started_at": "2026-12-07T10:00:01Z", "finished_at": None, "batch_size": None, "eta_s": 240.0,
               "links": {}},
    "ImageOut": {"image_id": IMG, "width": 768, "height": 512, "channels": 3, "bytes": 98304, "bpp": 2.0,
                 "psnr": 33.6, "parameters": 141000, "params": PARAMS, "source": "fit", "job_id": JOB,
                 "blob_sha256": "5e" * 32, "created_at": "2026-12-07T10:07:00Z", "links": LINKS},
    "Comparisons": {"image_id": IMG, "bytes": 98304, "psnr": 33.6, "items": [
        {"codec": "jpeg", "quality": 71, "bytes": 97012, "psnr": 32.9, "url": f"/v1/images/{IMG}/comparisons/jpeg"}]},
    "ServiceLimits": {
        "encode": {"default_bpp": 2.0, "bpp_min": 0.01, "bpp_max": 64.0, "psnr_min": 10.0, "psnr_max": 80.0,
                   "default_effort": 4, "effort_min": 1, "effort_max": 9, "max_steps": 20000,
                   "max_upload_bytes": 26214400, "max_image_pixels": 16000000, "time_limit_s": 3000},
        "render": {"max_width": 8192, "max_height": 8192, "max_pixels": 16777216, "max_dpr": 8.0,
                   "formats": ["png", "webp", "jpeg", "avif", "auto", "jpg"],
                   "presets": {"thumb": {"width": 256, "height": 256, "fit": "cover", "format": "auto"}}}},
    "Estimate": {"seconds": 900.8, "steps": 1460, "admitted": True, "detail": None, "tiles": 1, "workers": 1},
    "Readiness": {"status": "ok", "checks": {"database": "ok", "storage": "ok", "broker": "ok"}},
}
