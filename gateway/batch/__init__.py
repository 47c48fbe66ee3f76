"""Replay and import from pulse logs, as fast as the machine allows.

Each module is imported by name; these are they.
"""

__all__ = [
    "command",
    "dbimport",
    "extsort",
    "plot",
    "replay",
]
