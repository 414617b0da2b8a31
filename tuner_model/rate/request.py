"""What a caller asks of an encode, validated once: `EncodeRequest` declares the parameters and their bounds,
once; the API's query parameters, form fields and OpenAPI are generated from it (`field_schemas`), the job
stores it, and the plan is resolved from it (plan.py). `EncodeSettings` is the request plus the machine's
choices (device and seed) for the library's callers. Pure data (no torch): the API imports it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuner_model.core.errors import ConfigError
from tuner_model.rate.effort import DEFAULT_EFFORT, EFFORT_MAX, EFFORT_MIN

# Neither bpp nor psnr: a rate that looks good, like an image proxy's default quality (JPEG needs ~2 bpp
# for ~37 dB on Kodak; a 96×64 photo still gets > 26 dB from 300 steps on the CPU).
DEFAULT_BPP = 2.0
BPP_MIN, BPP_MAX = 0.01, 64.0
PSNR_MIN, PSNR_MAX = 10.0, 80.0
STEPS_MAX = 1_000_000


class EncodeRequest(BaseModel):
    """A target rate or a target quality (not both, or neither: DEFAULT_BPP), and an effort (like AVIF's
    speed: more fitting, a better picture at the same rate, a longer encode); `steps` overrides the
    effort's number of float-fit steps (advanced)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    bpp: float | None = Field(None, ge=BPP_MIN, le=BPP_MAX, description="target bits per pixel")
    psnr: float | None = Field(None, ge=PSNR_MIN, le=PSNR_MAX, description="target PSNR in dB")
    steps: int | None = Field(None, ge=1, le=STEPS_MAX, description="optimisation steps (advanced)")
    effort: int = Field(DEFAULT_EFFORT, ge=EFFORT_MIN, le=EFFORT_MAX,
                        description=f"how much fitting, {EFFORT_MIN} (fastest) to {EFFORT_MAX} (best)")

    @model_validator(mode="after")
    def _one_target(self) -> EncodeRequest:
        if self.bpp is not None and self.psnr is not None:
            raise ValueError("give a target bpp or a target psnr, not both")
        return self

    def canonical(self) -> dict[str, float | int | None]:
        """The fields that decide the result: what deduplication and batching compare."""
        return {"bpp": self.bpp, "psnr": self.psnr, "steps": self.steps, "effort": self.effort}


class EncodeSettings(EncodeRequest):
    """A request as the library's callers (the CLI, the worker, benchmarks) give it, with where to fit.
    Invalid values raise ConfigError with one line that names the field, like every library error."""

    device: str = "auto"
    seed: int = 0

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ConfigError(one_line(e)) from None


def first_error(e: ValidationError) -> tuple[str, str]:
    """The first error of a validation: the field (dotted; empty for the whole request) and its message."""
    err = e.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    message = "unknown parameter" if err.get("type") == "extra_forbidden" else str(err.get("msg", ""))
    return where, message.removeprefix("Value error, ")


def one_line(e: ValidationError) -> str:
    """The first error of a validation as `field: message`."""
    where, message = first_error(e)
    return f"{where + ': ' if where else ''}{message}"


def field_schemas() -> dict[str, dict[str, Any]]:
    """Each parameter's JSON schema as a query parameter or a form field holds it (never null there: absent
    instead), with its bounds and description: what the API's OpenAPI states."""
    out: dict[str, dict[str, Any]] = {}
    for name, schema in EncodeRequest.model_json_schema()["properties"].items():
        value = next(b for b in schema.get("anyOf", [schema]) if b.get("type") != "null")
        out[name] = {k: v for k, v in value.items() if k not in ("default", "title", "anyOf")}
        out[name]["description"] = schema.get("description", "")
    return out


__all__ = ["DEFAULT_BPP", "EncodeRequest", "EncodeSettings", "field_schemas", "first_error", "one_line"]
