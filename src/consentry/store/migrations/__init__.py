"""Alembic environment of the control-plane store (run via `Store.migrate()`)."""
