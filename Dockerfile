# One image for the API and the worker. The default torch is the CPU build; the GPU worker is built
# with TORCH_INDEX_URL pointing at a CUDA wheel index (see docker-compose.yml).
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TUNER_DATA_DIR=/data

WORKDIR /app
RUN useradd --create-home --uid 1000 tuner && mkdir /data && chown tuner /data
# g++ (and with it cc): torch.compile builds the renderer's fused sine at API start-up (TUNER_RENDER_COMPILE,
# ~0.65x the render time), and the worker builds the grid path's native top layer on its first fit
# (train/top_layer.c, ~1 s, cached under ~/.cache/tuner-native); without a compiler both run eagerly.
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*

# torch first, from the chosen index, so the project install below keeps it.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch>=2.3,<2.15"
COPY pyproject.toml README.md ./
COPY tuner_model ./tuner_model
COPY service ./service
COPY worker ./worker
COPY tuner_cli ./tuner_cli
RUN pip install ".[s3,postgres]"

USER tuner
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
# Without arguments: everything in one container, no Redis needed. It listens on 0.0.0.0 (to be reachable
# through a published port), so it needs an API key:
#   docker run -p 8000:8000 -e TUNER_BOOTSTRAP_KEY=tnr_$(openssl rand -hex 24) IMAGE
# (tests/test_docker_image.py builds the wheel from exactly the files copied above and runs this command.)
CMD ["tuner", "serve", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]
