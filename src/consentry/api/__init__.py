"""HTTP API (FastAPI): JSON under /v1, health, OpenAPI docs."""
