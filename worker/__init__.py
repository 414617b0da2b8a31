"""The Celery worker: the fit task on the `fit` queue, and the recovery scan for jobs whose worker died."""
