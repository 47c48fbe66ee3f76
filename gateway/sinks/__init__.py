"""Where results go, one job per module.

Each module is imported by name; these are they.
"""

__all__ = [
    "database",
    "failures",
    "identity",
    "integrity",
    "migrate",
    "mqtt",
    "outbox",
    "payloads",
    "quickread",
    "readback",
    "reads",
    "redact",
    "revision",
    "salvage",
    "schema",
    "store",
]
