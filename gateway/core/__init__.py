"""The pure core: edges -> hygiene, register, power, demand, intervals, reads, cross-checks.

No I/O, no clock: each module is imported by name; these are they.
"""

__all__ = [
    "arrays",
    "crosscheck",
    "edge",
    "errors",
    "estimate",
    "events",
    "hygiene",
    "intervals",
    "meter",
    "reads",
    "schedule",
    "state",
]
