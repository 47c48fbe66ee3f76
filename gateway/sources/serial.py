"""The ``serial`` source: a pulse-counter board on a serial line (SPEC section 6), with pyserial.

The board sends ASCII lines, each optionally followed by ``*HH`` (the XOR of the bytes before
``*``, in hex):

- ``E <input> <ticks_us> <level>``: an edge on input 0-63 at the board's free-running 32-bit
  microsecond counter (it wraps every 71.6 minutes), with the output's level after it;
- ``H <ticks_us>``: a heartbeat, at least once a second.

A line with a bad checksum or shape is counted and skipped, never half-applied. The counter is
unwrapped (consecutive lines are far less than half a wrap apart) and mapped to the gateway's
timeline through the heartbeats: serial latency only ever delays a line, so the smallest
host-minus-board offset over recent heartbeats is the best estimate. A heartbeat missing for
``HEARTBEAT_LOST_S`` is a ``link`` event, and so is the port disappearing (a USB unplug): the
port is then reopened every second until it comes back.

One board may serve several meters: one reader thread per port, shared by the meters on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gateway.core.edge import CHANNEL_10, Edge
from gateway.core.events import Event, EventKind
from gateway.daemon.clock import Timeline
from gateway.errors import SourceError
from gateway.sources import Poll, Source

logger = logging.getLogger(__name__)

WRAP = 1 << 32
HEARTBEAT_LOST_S = 2.5
OFFSET_WINDOW = 16
REOPEN_S = 1.0
NS_PER_US = 1_000
BOARD_RESET_US = 1_000_000  # a counter a second or more behind itself: the board restarted


def checksum(body: str) -> str:
    value = 0
    for byte in body.encode("ascii"):
        value ^= byte
    return f"{value:02X}"


def parse_line(line: str) -> tuple[str, list[int]] | None:
    """Return ("E", [input, ticks, level]) or ("H", [ticks]), or None for a bad line."""
    line = line.strip()
    if "*" in line:
        body, _, given = line.partition("*")
        if given.upper() != checksum(body):
            return None
    else:
        body = line
    parts = body.split()
    try:
        if len(parts) == 4 and parts[0] == "E":
            numbers = [int(p) for p in parts[1:]]
            if not (0 <= numbers[0] <= 63 and 0 <= numbers[1] < WRAP and numbers[2] in (0, 1)):
                return None
            return "E", numbers
        if len(parts) == 2 and parts[0] == "H":
            ticks = int(parts[1])
            return ("H", [ticks]) if 0 <= ticks < WRAP else None
    except ValueError:
        return None
    return None


@dataclass
class BoardClock:
    """Unwraps the board's counter and maps it to host monotonic time."""

    last_raw: int | None = None
    unwrapped_us: int = 0
    offsets_ns: deque[int] = field(default_factory=lambda: deque(maxlen=OFFSET_WINDOW))

    def unwrap(self, raw: int) -> int:
        if self.last_raw is None:
            self.unwrapped_us = raw
        else:
            step = (raw - self.last_raw + WRAP // 2) % WRAP - WRAP // 2
            if step < -BOARD_RESET_US:
                # The counter went back: the board restarted. Its old offsets mean nothing now.
                self.offsets_ns.clear()
            self.unwrapped_us += step
        self.last_raw = raw
        return self.unwrapped_us

    def heartbeat(self, board_us: int, host_mono_ns: int) -> None:
        self.offsets_ns.append(host_mono_ns - board_us * NS_PER_US)

    def to_host(self, board_us: int, received_mono_ns: int) -> int:
        if not self.offsets_ns:  # before the first heartbeat: when it arrived is the best bound
            return received_mono_ns
        return board_us * NS_PER_US + min(self.offsets_ns)


class SerialBoard:
    """One serial port and its reader thread, shared by the meters wired to the board."""

    def __init__(self, port: str, baudrate: int, *, opener: Any = None) -> None:
        self.port = port
        self.baudrate = baudrate
        self._opener = opener
        self._serial: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._queues: dict[int, deque[tuple[int, int, int]]] = {}  # input -> (host ns, ticks, lvl)
        self.clock = BoardClock()
        self.bad_lines = 0
        self.lines = 0
        self.last_heartbeat_mono_ns: int | None = None
        self.notes: deque[tuple[int, str]] = deque()  # (mono ns, what happened to the link)
        self.users = 0

    def subscribe(self, inputs: list[int]) -> dict[int, deque[tuple[int, int, int]]]:
        with self._lock:
            for number in inputs:
                if number in self._queues:
                    raise SourceError(f"{self.port}: input {number} is wired to two channels")
                self._queues[number] = deque()
            return {number: self._queues[number] for number in inputs}

    def _open_port(self) -> Any:
        if self._opener is not None:
            return self._opener(self.port, self.baudrate)
        import serial

        return serial.Serial(self.port, self.baudrate, timeout=0.2)

    def open(self) -> None:
        self.users += 1
        if self._thread is not None:
            return
        try:
            self._serial = self._open_port()
        except Exception as exc:
            raise SourceError(f"serial port {self.port}: {exc}") from None
        self._thread = threading.Thread(target=self._run, name=f"serial {self.port}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            port = self._serial
            if port is None:
                if self._stop.wait(REOPEN_S):
                    return
                try:
                    self._serial = self._open_port()
                    buffer = b""
                    self.clock = BoardClock()  # the board may have restarted meanwhile
                    self.notes.append((time.monotonic_ns(), f"serial port {self.port} is back"))
                except Exception:
                    continue
                continue
            try:
                chunk = port.read(256)
            except Exception as exc:  # the port went away (USB unplugged)
                self.notes.append((time.monotonic_ns(), f"serial port {self.port} lost: {exc}"))
                try:
                    port.close()
                except Exception:
                    logger.debug("closing a lost port failed", exc_info=True)
                self._serial = None
                continue
            if not chunk:
                continue
            received = time.monotonic_ns()
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                self._line(raw, received)

    def _line(self, raw: bytes, received_mono_ns: int) -> None:
        self.lines += 1
        try:
            parsed = parse_line(raw.decode("ascii"))
        except UnicodeDecodeError:
            parsed = None
        if parsed is None:
            self.bad_lines += 1
            return
        kind, numbers = parsed
        if kind == "H":
            board_us = self.clock.unwrap(numbers[0])
            self.clock.heartbeat(board_us, received_mono_ns)
            self.last_heartbeat_mono_ns = received_mono_ns
            return
        number, ticks, level = numbers
        board_us = self.clock.unwrap(ticks)
        queue = self._queues.get(number)
        if queue is not None:
            queue.append((self.clock.to_host(board_us, received_mono_ns), board_us, level))

    def close(self) -> None:
        self.users -= 1
        if self.users > 0:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._serial is not None:
            try:
                self._serial.close()
            except Exception:
                logger.debug("closing the port failed", exc_info=True)
        self._serial = None


class SerialSource(Source):
    """One meter's channels on inputs of a serial pulse-counter board."""

    live = True

    def __init__(
        self, meter: str, board: SerialBoard, inputs: dict[str, int], timeline: Timeline
    ) -> None:
        self.meter = meter
        self.board = board
        self.inputs = inputs
        self.timeline = timeline
        self._queues: dict[str, deque[tuple[int, int, int]]] = {}
        self._link_ok = True
        self._lost_at: int | None = None
        self._previous: dict[str, tuple[int, int]] = {}  # channel -> (t_ns, board_us) last edge
        self._notes_seen = 0

    def open(self) -> None:
        queues = self.board.subscribe(list(self.inputs.values()))
        self._queues = {ch: queues[number] for ch, number in self.inputs.items()}
        self.board.open()
        logger.info(
            "%s: serial %s, %s",
            self.meter,
            self.board.port,
            ", ".join(f"{ch} on input {n}" for ch, n in self.inputs.items()),
        )

    def poll(self, mono_ns: int) -> Poll:
        edges = []
        for channel, queue in self._queues.items():
            while True:
                try:
                    host_ns, board_us, level = queue.popleft()
                except IndexError:
                    break
                t_ns = self.timeline.from_monotonic(host_ns)
                previous = self._previous.get(channel)
                if previous is not None:
                    # A better offset estimate must not pull an edge closer to the one before
                    # than the board itself saw them (that would fake a glitch).
                    prev_t, prev_board = previous
                    spacing = (board_us - prev_board) * NS_PER_US
                    if spacing > 0:
                        t_ns = max(t_ns, prev_t + spacing)
                self._previous[channel] = (t_ns, board_us)
                edges.append(Edge(t_ns, self.meter, channel, level))
        edges.sort(key=lambda e: (e.t_ns, e.channel != CHANNEL_10, e.level))
        now = self.timeline.from_monotonic(mono_ns)
        events = []
        while len(self.board.notes) > self._notes_seen:
            note_mono, text = self.board.notes[self._notes_seen]
            self._notes_seen += 1
            events.append(
                Event(self.timeline.from_monotonic(note_mono), EventKind.LINK, None, text)
            )
        last = self.board.last_heartbeat_mono_ns
        silent = last is None or mono_ns - last > HEARTBEAT_LOST_S * 1e9
        gaps = []
        if silent and self._link_ok and (last is not None or self.board.lines):
            self._link_ok = False
            self._lost_at = self.timeline.from_monotonic(last) if last is not None else now
            events.append(Event(now, EventKind.LINK, None, f"no heartbeat on {self.board.port}"))
        elif not silent and not self._link_ok:
            self._link_ok = True
            events.append(Event(now, EventKind.LINK, None, f"heartbeats back on {self.board.port}"))
            if self._lost_at is not None:
                # Nothing was watched meanwhile: those intervals are partial, not empty.
                gaps.append((self._lost_at, now, f"serial link {self.board.port} was down"))
                self._lost_at = None
        # "Now" trails the last heartbeat: an edge the board has not sent yet may still be older.
        if last is not None:
            now = min(now, self.timeline.from_monotonic(last))
        return Poll(edges, now, events=events, gaps=gaps)

    def close(self) -> None:
        self.board.close()
