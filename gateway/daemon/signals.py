"""Signals for the main loop: flags and a wake-up pipe, nothing that takes a lock.

A Python signal handler runs in the main thread between two bytecodes, possibly while that
thread holds a lock (``threading.Event.wait`` does), so setting an Event from a handler can
deadlock: it did, once in 27 stops under load. Here a handler only sets a flag and writes a byte
to a non-blocking pipe; the main loop sleeps in ``select`` on that pipe, so it wakes at once.

The run path installs them before anything else it imports (:func:`install_early`, from
``gateway/__main__.py`` and the start of ``cli.main``), so a SIGTERM during start-up is a clean
stop with status 0. One that comes while Python itself starts, before the gateway's first line
runs, still ends the process by the signal (status -15, nothing opened yet; systemd counts that
as a clean stop too).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from types import FrameType


class Flag:
    """A flag the main loop polls; ``set`` is safe from a signal handler."""

    def __init__(self, wakeup_fd: int) -> None:
        self._wakeup_fd = wakeup_fd
        self._set = False

    def set(self) -> None:
        self._set = True
        with contextlib.suppress(OSError):  # a full pipe: the loop is awake already
            os.write(self._wakeup_fd, b"\0")

    def is_set(self) -> bool:
        return self._set

    def clear(self) -> None:
        self._set = False


class Signals:
    """SIGTERM and SIGINT ask the loop to stop; SIGHUP to start new capture files."""

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self.stop = Flag(self._write_fd)
        self.reopen = Flag(self._write_fd)
        self.received: list[int] = []  # signal numbers, for the log (a handler must not log)

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reopen)

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)
        self.stop.set()

    def _on_reopen(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)
        self.reopen.set()

    def names(self) -> str:
        """Return the signals received, by name, for the log ('' when none)."""
        return ", ".join(signal.Signals(n).name for n in self.received)

    def wait(self, timeout_s: float) -> None:
        """Sleep up to ``timeout_s``, or until a signal (or any flag) wakes the loop."""
        if self.stop.is_set():
            return
        readable, _, _ = select.select([self._read_fd], [], [], timeout_s)
        if readable:
            try:
                while os.read(self._read_fd, 4096):
                    pass
            except BlockingIOError:
                pass


_early: Signals | None = None


def run_requested(argv: list[str]) -> bool:
    """Return whether a command line asks for ``run`` (options before it are flags only)."""
    return next((arg for arg in argv if not arg.startswith("-")), None) == "run"


def install_early() -> None:
    """Install the handlers now, ahead of the run path's imports (once per process)."""
    global _early
    if _early is None:
        _early = Signals()
        _early.install()


def installed() -> Signals:
    """Hand over the handlers :func:`install_early` installed (once), or install new ones."""
    global _early
    signals, _early = _early, None
    if signals is None:
        signals = Signals()
        signals.install()
    return signals
