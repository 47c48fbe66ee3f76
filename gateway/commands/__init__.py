"""The command line's other commands: simulate, status, export, reconcile, bill, db.

Each module is imported by name; these are they.
"""

__all__ = [
    "bill",
    "database",
    "espi",
    "simulate",
]
