"""The daemon's capture, when ``[gateway] capture_dir`` asks for one: a failure turns it off.

Capture is a record beside the count, never a reason to stop counting: a file that cannot be
written (a full card, a directory gone) is logged once, said to the meters by ``on_off``, and
nothing is captured until the gateway restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from gateway.config import GatewaySettings
from gateway.core.edge import Edge
from gateway.errors import SinkError
from gateway.pulselog.capture import Capture

__all__ = ["Capturing"]

logger = logging.getLogger(__name__)


class Capturing:
    """The capture if on (else every call does nothing); ``on_off`` hears why it went off."""

    def __init__(self, settings: GatewaySettings, on_off: Callable[[SinkError], None]) -> None:
        self.capture: Capture | None = None
        if settings.capture_dir:
            self.capture = Capture(settings.capture_dir, settings.capture_keep_days, settings.id)
        self._on_off = on_off

    def write(self, edges: Sequence[Edge], now_ns: int) -> None:
        """Write a poll's raw edges (before any filtering)."""
        self._do(lambda capture: capture.write(edges, now_ns))

    def flush(self) -> None:
        self._do(Capture.flush)

    def reopen(self, now_by_meter: Mapping[str, int]) -> None:
        """Start new files (SIGHUP), each meter's stamped in its own clock."""
        self._do(lambda capture: capture.reopen(now_by_meter))

    def close(self, now_by_meter: Mapping[str, int]) -> None:
        """Close the files, each ending where its meter was watched up to."""
        self._do(lambda capture: capture.close(now_by_meter))

    def _do(self, action: Callable[[Capture], None]) -> None:
        if self.capture is None:
            return
        try:
            action(self.capture)
        except SinkError as exc:
            logger.error("%s; capture is off until the gateway restarts", exc)
            self.capture = None
            self._on_off(exc)
