"""systemd's notification protocol (sd_notify) without a dependency: READY, WATCHDOG, STOPPING.

With ``Type=notify`` systemd waits for ``READY=1``; with ``WatchdogSec=`` it restarts the service
unless ``WATCHDOG=1`` comes at least that often. The main loop pings only while it is healthy.
Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

logger = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # an abstract socket
        self.address = address or None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        valid_pid = pid is None or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 1e6 if usec and usec.isdigit() and valid_pid else None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, message: str) -> None:
        if self.address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Never wait: a listener that does not read (its queue full) must not hold
                # up the loop that counts edges; a ping dropped now is sent again in a second.
                sock.sendto(message.encode(), socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            logger.debug("sd_notify failed: %s", exc)

    def ready(self, status: str = "") -> None:
        self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")
