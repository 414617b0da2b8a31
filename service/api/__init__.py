"""The HTTP API (FastAPI): `create_app(settings)` builds it; routers live in `routers/` by resource."""
