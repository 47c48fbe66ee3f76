"""The one place where storage and capture failures become :class:`SinkError`.

A database that is locked, full, read-only or gone, and a capture file that cannot be written,
all fail the same way for the service: a ``SinkError`` naming what failed and why, in one line,
with the original exception chained for the log. The file half is
:func:`gateway.errors.os_errors`, which the capture uses without the database layer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import SinkError, first_line, os_errors

__all__ = ["first_line", "sink_errors"]


@contextmanager
def sink_errors(what: str) -> Iterator[None]:
    """Turn a storage or file failure inside the block into ``SinkError("what: why")``."""
    try:
        with os_errors(what):
            yield
    except SQLAlchemyError as exc:
        raise SinkError(f"{what}: {first_line(exc)}") from exc
