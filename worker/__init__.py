"""The Celery worker: the fit task on the `fit` queue, and the recovery scan for jobs whose worker died."""

import tuner_model  # noqa: F401  first, before any module here imports torch (core/mkl_dispatch.py)
