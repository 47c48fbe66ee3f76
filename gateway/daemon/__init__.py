"""The running gateway: the loop, the commit policy and the lifecycle.

Each module is imported by name; these are they.
"""

__all__ = [
    "capturing",
    "console",
    "notify",
    "service",
    "signals",
    "wiring",
]
