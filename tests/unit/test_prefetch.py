"""Replay's reader thread: it stops when the consumer stops, wherever it is."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from gateway.batch.replay import prefetch


def test_stopping_after_the_reader_has_read_everything_does_not_hang() -> None:
    # Regression: with the queue full of the last items, the reader blocked for ever putting its
    # end marker, and the consumer stopping early (replay's switch to sorting) joined it for ever.
    read_all = threading.Event()

    def items() -> Iterator[int]:
        yield from range(3)
        read_all.set()  # resumed after handing over the last item: the queue is full again

    reader = prefetch(items(), depth=2)
    assert next(reader) == 0
    assert read_all.wait(timeout=10)
    closer = threading.Thread(target=reader.close, daemon=True)
    closer.start()
    closer.join(timeout=10)
    assert not closer.is_alive()


def test_an_error_in_the_reader_is_raised_to_the_consumer() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(prefetch(items()))
