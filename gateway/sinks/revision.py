"""The Alembic revision the models describe (migrations/versions/); a test holds it to the head.

Alone in a module that imports nothing, so that a reader which must start quickly (``status``
through :mod:`gateway.sinks.quickread`) can check a database's revision without SQLAlchemy.
"""

from __future__ import annotations

__all__ = ["SCHEMA_REVISION"]

SCHEMA_REVISION = "0004"
