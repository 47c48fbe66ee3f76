"""The gateway's errors, by lifecycle.

    GatewayError
     +-- ConfigError          bad configuration or usage: names the key or option (exit status 2)
     |    +-- NotFoundError   asked for what the database does not hold (also a LookupError)
     |    +-- ScheduleError   a billing read schedule that cannot be (also a ValueError; the
     |                        core's, gateway/core/schedule.py): carries its key
     +-- PulseLogError        a malformed pulse log or load profile: names the file and line
     |                        (exit 2)
     +-- SourceError          an edge source failed (GPIO, serial, simulate, replay)
     |    +-- SourceClosedError  a source polled after it was closed
     +-- SinkError            a sink failed (database, MQTT, a capture file)

Like gpiozero's ``PinInvalidPin(PinError, ValueError)``, an error is also the builtin it
resembles, so callers catch either, and an error carries what a caller needs (``ScheduleError``
its key), never to be sorted by its message text. ``GatewayError`` and ``ConfigError`` are
defined in :mod:`gateway.core.errors`, so the pure core can raise a ``ConfigError`` too; they are
the same classes here. Adapters wrap third-party failures with ``raise SinkError(...) from exc``;
the command line turns ConfigError and PulseLogError into a one-line message and exit status 2,
never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from gateway.core.errors import ConfigError, GatewayError

__all__ = [
    "ConfigError",
    "GatewayError",
    "NotFoundError",
    "PulseLogError",
    "SinkError",
    "SourceClosedError",
    "SourceError",
    "first_line",
    "os_errors",
]


class NotFoundError(ConfigError, LookupError):
    """A command asked for what the database does not hold (a period no read ends)."""


class PulseLogError(GatewayError):
    """A malformed input file; the message names the file and, when known, the line."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        self.reason = message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")


class SourceError(GatewayError):
    """An edge source failed."""


class SourceClosedError(SourceError):
    """A source was polled after it was closed."""


class SinkError(GatewayError):
    """A sink (the database, the MQTT broker, a capture file) failed."""


def first_line(exc: BaseException) -> str:
    """Return the first line of what an exception (or the DBAPI error inside it) says."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextmanager
def os_errors(what: str) -> Iterator[None]:
    """Turn a file failure inside the block into ``SinkError("what: why")``."""
    try:
        yield
    except OSError as exc:
        raise SinkError(f"{what}: {exc.strerror or first_line(exc)}") from exc
