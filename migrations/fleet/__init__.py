"""Alembic migrations of the fleet collector's database (shipped in the wheel)."""
