"""The fleet schema's Alembic revision and version table, in a module that imports nothing.

``status``, ``bill`` and ``export`` look for :data:`VERSION_TABLE` to tell a fleet database
from a gateway's before anything else: that look must not import SQLAlchemy (issue 21).
"""

from __future__ import annotations

__all__ = ["FLEET_REVISION", "VERSION_TABLE"]

# The Alembic revision the fleet models describe (migrations/fleet/versions/); a test holds it
# to the head of that tree.
FLEET_REVISION = "f0001"
VERSION_TABLE = "fleet_alembic_version"  # not alembic_version: a fleet database is told apart
