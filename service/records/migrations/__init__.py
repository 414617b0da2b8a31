"""Alembic migrations of the records (jobs, images, keys): service/records/schema.py runs them."""
