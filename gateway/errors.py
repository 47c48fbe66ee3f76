"""The gateway's errors, by lifecycle.

    GatewayError
     +-- ConfigError      bad configuration or usage: names the key or option (exit status 2)
     +-- PulseLogError    a malformed pulse log or load profile: names the file and line (exit 2)
     +-- SourceError      an edge source failed (GPIO, serial, simulate, replay)
     +-- SinkError        a sink failed (database, MQTT)

Adapters wrap third-party failures with ``raise SinkError(...) from exc``; the command line turns
ConfigError and PulseLogError into a one-line message and exit status 2, never a traceback.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of the gateway's errors."""


class ConfigError(GatewayError):
    """Bad configuration or command-line usage."""


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


class SinkError(GatewayError):
    """A sink (the database or the MQTT broker) failed."""
