"""Shared fixtures: small images shipped with the package, and real Redis on loopback."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from tuner_model.core.image_io import load_image

REDIS_URL = os.environ.get("TUNER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# API processes started by the tests render eagerly: compiling the fused sine costs seconds of CPU per
# process (tests/test_service_api.py checks the warm-up once).
os.environ.setdefault("TUNER_RENDER_COMPILE", "0")


def sample_path(name: str) -> Path:
    return Path(str(resources.files("tuner_model") / "samples" / name))


@pytest.fixture(scope="session")
def parrots_path() -> Path:
    return sample_path("parrots-96x64.png")


@pytest.fixture(scope="session")
def parrots(parrots_path: Path) -> np.ndarray:
    return load_image(parrots_path)


@pytest.fixture
def image_dir(tmp_path: Path, parrots_path: Path) -> Path:
    """A directory holding one image, a.png (the parrots sample): what the benchmarks take."""
    images = tmp_path / "imgs"
    images.mkdir()
    (images / "a.png").write_bytes(parrots_path.read_bytes())
    return images


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A real Redis; skips where none runs, but fails in CI (CI must have it)."""
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except Exception as e:  # noqa: BLE001 - any failure means "no Redis here"
        if os.environ.get("CI"):
            pytest.fail(f"Redis is required in CI and is not answering at {REDIS_URL}: {e}")
        pytest.skip(f"no Redis at {REDIS_URL}")
    return REDIS_URL


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server on a free loopback port, shared by the S3 store tests."""
    server_mod = pytest.importorskip("moto.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
