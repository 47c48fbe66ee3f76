"""Failures that repeat at every pass of a loop: said once when they start, once when they end.

A failing card or broker fails the same way many times a second, and logging every try filled
the journal (61 lines in 6.1 s while the card failed). :class:`Trouble` logs the first failure
of a run at its level and the rest at DEBUG, then the first success after them once, with how
long it took and how many tries failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Trouble:
    """One thing that can fail again and again (``what`` names it: "reading the outbox")."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        level: int = logging.ERROR,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what
        self.level = level
        self._monotonic = monotonic
        self.since: float | None = None  # when the current run of failures began
        self.tries = 0

    @property
    def failing(self) -> bool:
        return self.since is not None

    def failed(self, message: str, *args: object, now_s: float | None = None) -> None:
        """Log a failure: at ``level`` if it starts a run of failures, else at DEBUG.

        ``now_s``: the caller's own monotonic clock, if it has one (else this one's).
        """
        self.tries += 1
        if self.since is None:
            self.since = self._monotonic() if now_s is None else now_s
            self.logger.log(self.level, message, *args)
        else:
            self.logger.debug(message, *args)

    def cleared(self, *, now_s: float | None = None) -> None:
        """Say, once, that it works again (nothing if it was not failing)."""
        if self.since is None:
            return
        now_s = self._monotonic() if now_s is None else now_s
        self.logger.warning(
            "%s works again after %.0f s (%d failed %s)",
            self.what,
            now_s - self.since,
            self.tries,
            "try" if self.tries == 1 else "tries",
        )
        self.since, self.tries = None, 0
