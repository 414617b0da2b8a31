"""The FastAPI application, its records and storage."""

import tuner_model  # noqa: F401  first, before any module here imports torch (core/mkl_dispatch.py)
