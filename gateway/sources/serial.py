"""The ``serial`` source: a pulse-counter board on a serial line (SPEC section 6), with pyserial.

The board sends ASCII lines, each optionally followed by ``*HH`` (the XOR of the bytes before
``*``, in hex):

- ``E <input> <ticks_us> <level>``: an edge on input 0-63 at the board's free-running 32-bit
  microsecond counter (it wraps every 71.6 minutes), with the output's level after it;
- ``H <ticks_us>``: a heartbeat, at least once a second.

A line with a bad checksum or shape is counted and skipped, never half-applied. The counter
says how much board time passed between two lines only modulo a wrap, so it is unwrapped with the
host's receive times (:class:`BoardClock`), then mapped to the gateway's timeline through the
heartbeats: serial latency only ever delays a line, so the smallest host-minus-board offset over
recent heartbeats is the best estimate, and no edge is stamped after its line was received. A
counter that does not fit the time the host saw pass (a board restart, a stray line) and a long
silence start the mapping afresh, and say so as a ``link`` event. A heartbeat missing for
``HEARTBEAT_LOST_S`` is a ``link`` event, and so is the port disappearing (a USB unplug): the
port is then reopened every second until it comes back.

One board may serve several meters: one reader thread per port, shared by the meters on it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.core.edge import CHANNEL_10, Edge
from gateway.core.events import Event, EventKind
from gateway.errors import ConfigError, SourceError
from gateway.sources import Gap, Poll, Source, SourceContext, SourceStart, WiredSettings
from gateway.timeline import Timeline
from gateway.trouble import Trouble
from meter_model.units import NS_PER_US

if TYPE_CHECKING:
    from gateway.config import MeterSettings

__all__ = [
    "BoardClock",
    "Queued",
    "SerialBoard",
    "SerialSettings",
    "SerialSource",
    "checksum",
    "parse_line",
]

logger = logging.getLogger(__name__)

WRAP = 1 << 32
HEARTBEAT_LOST_S = 2.5
OFFSET_WINDOW = 16
REOPEN_S = 1.0
# How far the board's clock may run from the host's: crystals are within ±100 ppm and ceramic
# resonators within ±0.5 %, so ±1 % leaves room and still tells wraps apart for 2.5 days.
RATE_TOLERANCE_PPM = 10_000
# How much more board time than host time may pass between two lines: the earlier line was
# late (USB latency, a busy host) and this one was not. Heartbeats come every second at most.
LATENCY_US = 2_000_000
# A line may come this much before the one before it (the board's own ordering).
OUT_OF_ORDER_US = 1_000_000
# After this long without a line the offsets may have drifted (and a busy host could not have
# held lines back so long): the mapping starts afresh from the next heartbeat.
RESYNC_SILENCE_US = 10_000_000
STEADY_NS = 60_000_000_000  # a board clock that held this long after a restart is steady again


@dataclass(frozen=True)
class Queued:
    """An edge the board sent, waiting for its source's next poll."""

    host_mono_ns: int  # on the host's monotonic clock
    board_us: int  # on the board's clock, unwrapped
    level: int
    epoch: int  # the board clock's epoch: board times compare only within one


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
    """Unwrap the board's counter with the host's receive times and map it to host monotonic time.

    Between two lines, the host's monotonic clock says how much time passed, within
    ``RATE_TOLERANCE_PPM`` and the serial latency; the counter says it modulo ``WRAP``. The
    number of wraps that brings the board's elapsed time closest to the host's is taken, if the
    result is within tolerance: at most ``LATENCY_US`` (plus the rate tolerance) more than the host
    saw pass and at most ``OUT_OF_ORDER_US`` back, or, after more than ``RESYNC_SILENCE_US``
    without a line, within the tolerance either way. A counter that fits no number of wraps is a
    board restart (or a stray line): the mapping starts afresh from it. A silence that long also
    starts the mapping afresh, the unwrapped time running on. Either way a new ``epoch`` begins
    (board times of different epochs are not comparable) and ``notes`` says why.
    """

    last_raw: int | None = None
    last_received_ns: int | None = None
    unwrapped_us: int = 0
    epoch: int = 0
    offsets_ns: deque[int] = field(default_factory=lambda: deque(maxlen=OFFSET_WINDOW))
    notes: deque[str] = field(default_factory=deque)

    def unwrap(self, raw: int, received_mono_ns: int) -> int:
        """Return the board time of a line received at ``received_mono_ns``, in µs."""
        last_raw, last_received = self.last_raw, self.last_received_ns
        self.last_raw, self.last_received_ns = raw, received_mono_ns
        if last_raw is None or last_received is None:
            self._start(raw)
            return self.unwrapped_us
        host_us = max(0, received_mono_ns - last_received) // NS_PER_US
        allowed_us = host_us * RATE_TOLERANCE_PPM // 1_000_000 + LATENCY_US
        silence = host_us > RESYNC_SILENCE_US
        # Over a short gap a busy host may have held the line back (the board's time then ran
        # less than the host's), but the counter never goes back beyond the board's own ordering.
        lowest_us = host_us - allowed_us if silence else -OUT_OF_ORDER_US
        forward_us = (raw - last_raw) % WRAP
        step_us = forward_us + (host_us - forward_us + WRAP // 2) // WRAP * WRAP
        if not lowest_us <= step_us <= host_us + allowed_us:
            self.notes.append(
                f"board restarted: its counter went from {last_raw} to {raw} in "
                f"{host_us / 1e6:.3f} s; clock re-synchronised"
            )
            self._start(raw)
        elif silence:
            self.notes.append(f"clock re-synchronised after {host_us / 1e6:.0f} s without a line")
            self._start(self.unwrapped_us + step_us)
        else:
            self.unwrapped_us += step_us
        return self.unwrapped_us

    def _start(self, board_us: int) -> None:
        self.unwrapped_us = board_us
        self.epoch += 1
        self.offsets_ns.clear()

    def forget(self) -> None:
        """Start afresh with the next line (the port was reopened: the board may have restarted)."""
        self.last_raw = self.last_received_ns = None

    def heartbeat(self, board_us: int, received_mono_ns: int) -> None:
        self.offsets_ns.append(received_mono_ns - board_us * NS_PER_US)

    def to_host(self, board_us: int, received_mono_ns: int) -> int:
        """Map a board time to host monotonic time; ``received_mono_ns`` is when its line came."""
        if not self.offsets_ns:  # before the epoch's first heartbeat: when it arrived is the bound
            return received_mono_ns
        # Nothing happened after its line was received, whatever the offsets say.
        return min(board_us * NS_PER_US + min(self.offsets_ns), received_mono_ns)


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
        # input -> (host monotonic ns, board µs, level, clock epoch) of each edge
        self._queues: dict[int, deque[Queued]] = {}
        self._monotonic_ns: Callable[[], int] = time.monotonic_ns
        self.clock = BoardClock()
        self.bad_lines = 0
        self.lines = 0
        self.last_heartbeat_mono_ns: int | None = None
        self.notes: deque[tuple[int, str]] = deque()  # (mono ns, what happened to the link)
        self.users = 0
        # A board in a restart loop would log a line per line it sends: said once, and once
        # when its clock has held for STEADY_NS (each restart is still an event).
        self._clock_trouble = Trouble(logger, f"serial board on {port}", level=logging.WARNING)
        self._last_note_ns = 0

    def subscribe(self, inputs: list[int]) -> dict[int, deque[Queued]]:
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

    def open(self, monotonic_ns: Callable[[], int] | None = None) -> None:
        """Start reading; receive times come from ``monotonic_ns`` (the timeline's clock)."""
        self.users += 1
        if self._thread is not None:
            return
        if monotonic_ns is not None:
            self._monotonic_ns = monotonic_ns
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
                    self.clock.forget()  # the board may have restarted meanwhile
                    self.notes.append((self._monotonic_ns(), f"serial port {self.port} is back"))
                except Exception:
                    continue
                continue
            try:
                chunk = port.read(256)
            except Exception as exc:  # the port went away (USB unplugged)
                self.notes.append((self._monotonic_ns(), f"serial port {self.port} lost: {exc}"))
                try:
                    port.close()
                except Exception:
                    logger.debug("closing a lost port failed", exc_info=True)
                self._serial = None
                continue
            if not chunk:
                continue
            received = self._monotonic_ns()
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                self.receive(raw, received)

    def receive(self, raw: bytes, received_mono_ns: int) -> None:
        """Take one line (without its newline) read from the port at ``received_mono_ns``.

        ``lines`` counts it once it is handled: its edge queued, its heartbeat noted.
        """
        try:
            parsed = parse_line(raw.decode("ascii"))
        except UnicodeDecodeError:
            parsed = None
        if parsed is None:
            self.bad_lines += 1
        else:
            self._take(*parsed, received_mono_ns)
        self.lines += 1

    def _take(self, kind: str, numbers: list[int], received_mono_ns: int) -> None:
        clock = self.clock
        board_us = clock.unwrap(numbers[0] if kind == "H" else numbers[1], received_mono_ns)
        while clock.notes:
            text = clock.notes.popleft()
            self._clock_trouble.failed(
                "serial board on %s: %s", self.port, text, now_s=received_mono_ns / 1e9
            )
            self._last_note_ns = received_mono_ns
            self.notes.append((received_mono_ns, f"serial board on {self.port}: {text}"))
        if self._clock_trouble.failing and received_mono_ns - self._last_note_ns >= STEADY_NS:
            self._clock_trouble.cleared(now_s=received_mono_ns / 1e9)
        if kind == "H":
            clock.heartbeat(board_us, received_mono_ns)
            self.last_heartbeat_mono_ns = received_mono_ns
            return
        number, _, level = numbers
        queue = self._queues.get(number)
        if queue is not None:
            host_ns = clock.to_host(board_us, received_mono_ns)
            queue.append(Queued(host_ns, board_us, level, clock.epoch))

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


INPUT_RANGE = {"range": (0, 63)}


@dataclass(frozen=True)
class SerialSettings(WiredSettings):
    """``source = "serial"``: the board's port and speed, and its inputs the outputs feed."""

    wired_keys = ("input_10", "input_1k")
    port: str | None = None
    baudrate: int = field(default=115_200, metadata={"range": (50, 4_000_000)})
    input_10: int | None = field(default=None, metadata=INPUT_RANGE)
    input_1k: int | None = field(default=None, metadata=INPUT_RANGE)

    def check(self, where: str) -> None:
        if not self.port:
            raise ConfigError(f'{where}.port: missing required key for source "serial"')
        super().check(where)

    def line(self, number: int) -> tuple[str, ...]:
        return ("serial", str(self.port), str(number))


class SerialSource(Source):
    """One meter's channels on inputs of a serial pulse-counter board."""

    settings_type = SerialSettings
    live = True

    @classmethod
    def from_settings(
        cls, settings: MeterSettings, start: SourceStart, context: SourceContext
    ) -> SerialSource:
        backend = settings.backend
        assert isinstance(backend, SerialSettings) and backend.port is not None
        board = context.boards.get(backend.port)
        if board is None:  # meters on one board share it
            board = context.boards[backend.port] = SerialBoard(
                backend.port, backend.baudrate, opener=context.serial_opener
            )
        inputs = backend.wired()
        return cls(settings.name, board, inputs, context.timeline, state=start.source_state)

    @classmethod
    def check_inputs(cls, settings: MeterSettings, where: str, *, ports: bool = True) -> None:
        assert isinstance(settings.backend, SerialSettings)
        port = settings.backend.port
        if ports and not os.path.exists(port or ""):
            raise ConfigError(f"{where}.port: {port} does not exist")

    def __init__(
        self,
        meter: str,
        board: SerialBoard,
        inputs: dict[str, int],
        timeline: Timeline,
        *,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.meter = meter
        self.board = board
        self._bad_lines_before = int((state or {}).get("bad_lines", 0))  # earlier runs
        self.inputs = inputs
        self.timeline = timeline
        self._queues: dict[str, deque[Queued]] = {}
        self._link_ok = True
        self._lost_at: int | None = None
        # channel -> (t_ns, board_us, clock epoch) of its last edge
        self._previous: dict[str, tuple[int, int, int]] = {}
        self._notes_seen = 0

    def resume_state(self) -> dict[str, Any]:
        """The board's bad lines (bad checksum or shape), counted across restarts: status shows
        them."""
        return {"bad_lines": self._bad_lines_before + self.board.bad_lines}

    def open(self) -> None:
        queues = self.board.subscribe(list(self.inputs.values()))
        self._queues = {ch: queues[number] for ch, number in self.inputs.items()}
        self.board.open(self.timeline.monotonic_ns)
        logger.info(
            "%s: serial %s, %s",
            self.meter,
            self.board.port,
            ", ".join(f"{ch} on input {n}" for ch, n in self.inputs.items()),
        )

    def poll(self, mono_ns: int) -> Poll:
        self.check_open()
        edges = []
        for channel, queue in self._queues.items():
            while True:
                try:
                    queued = queue.popleft()
                except IndexError:
                    break
                board_us, epoch = queued.board_us, queued.epoch
                t_ns = self.timeline.from_monotonic(queued.host_mono_ns)
                previous = self._previous.get(channel)
                # A better offset estimate must not pull an edge closer to the one before than
                # the board itself saw them (that would fake a glitch). Only within an epoch:
                # across a board restart or a resync the board times are not comparable.
                if previous is not None and previous[2] == epoch:
                    prev_t, prev_board, _ = previous
                    spacing = (board_us - prev_board) * NS_PER_US
                    if spacing > 0:
                        t_ns = max(t_ns, prev_t + spacing)
                self._previous[channel] = (t_ns, board_us, epoch)
                edges.append(Edge(t_ns, self.meter, channel, queued.level))
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
                gaps.append(Gap(self._lost_at, now, f"serial link {self.board.port} was down"))
                self._lost_at = None
        # "Now" trails the last heartbeat: an edge the board has not sent yet may still be older.
        if last is not None:
            now = min(now, self.timeline.from_monotonic(last))
        return Poll(edges, now, events=events, gaps=gaps)

    def close(self) -> None:
        if self.closed:
            return  # the board counts its users: one close each
        self.closed = True
        self.board.close()
