"""Errors raised by the meter model for inputs a real meter could not be given.

MeterModelError (ValueError)
 +-- OutOfRangeError   a quantity outside what the manual allows
 +-- UnknownModelError a model number the manual does not describe
"""

from __future__ import annotations


class MeterModelError(ValueError):
    """Root of the meter model's errors."""


class OutOfRangeError(MeterModelError):
    """A quantity outside its allowed range; names the quantity and the range."""

    def __init__(self, quantity: str, value: object, allowed: str) -> None:
        self.quantity = quantity
        self.value = value
        self.allowed = allowed
        super().__init__(f"{quantity} {value} is out of range (allowed: {allowed})")


class UnknownModelError(MeterModelError):
    """A model number that is not a Series 1000 or 2000 meter the manual describes."""

    def __init__(self, model: str, reason: str) -> None:
        self.model = model
        self.reason = reason
        super().__init__(f"unknown meter model {model!r}: {reason}")
