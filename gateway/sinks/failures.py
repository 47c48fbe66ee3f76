"""The one place where storage and capture failures become :class:`SinkError`.

A database that is locked, full, read-only or gone, and a capture file that cannot be written,
all fail the same way for the service: a ``SinkError`` naming what failed and why, in one line,
with the original exception chained for the log.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import SinkError


def first_line(exc: BaseException) -> str:
    """Return the first line of what an exception (or the DBAPI error inside it) says."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextmanager
def sink_errors(what: str) -> Iterator[None]:
    """Turn a storage or file failure inside the block into ``SinkError("what: why")``."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise SinkError(f"{what}: {first_line(exc)}") from exc
    except OSError as exc:
        raise SinkError(f"{what}: {exc.strerror or first_line(exc)}") from exc
