"""Alembic migrations of the amr-gateway database (shipped in the wheel, run by the gateway)."""
