"""The two roots of the gateway's error family, here so that the pure core may raise them.

The core imports nothing outside itself, yet a bad schedule is a configuration mistake like
any other; :mod:`gateway.errors` re-exports both classes with the rest of the family (the tree
is drawn there), so each is one class whichever module names it.
"""

from __future__ import annotations

__all__ = ["ConfigError", "GatewayError"]


class GatewayError(Exception):
    """Root of the gateway's errors."""


class ConfigError(GatewayError):
    """Bad configuration or command-line usage."""
