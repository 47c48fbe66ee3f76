"""The web view and ``/metrics`` (issue 20, SPEC section 8): read-only, off unless configured.

``snapshot`` (what the loop hands over), ``provider`` (where the numbers come from: the
gateway's, or later a fleet's), ``server`` (HTTP, SSE, access), ``pages`` (HTML),
``metrics`` (Prometheus), ``static/`` (scripts and style, inside the wheel).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.web.server import WebServer
    from gateway.web.snapshot import SnapshotHolder

__all__ = ["gateway_web"]


def gateway_web(config: Config, where: str | None = None) -> tuple[WebServer, SnapshotHolder]:
    """Bind the daemon's web view (not yet serving); ConfigError naming the key (or ``where``,
    e.g. ``--web``) when it cannot.

    Called before the database is opened, so a bad ``[web]`` changes nothing.
    """
    from gateway.web.provider import GatewayProvider
    from gateway.web.server import WebServer
    from gateway.web.snapshot import SnapshotHolder

    holder = SnapshotHolder()
    provider = GatewayProvider(config.gateway.database, holder, config.gateway.id)
    server = WebServer(config.web, provider, where or f"{config.path or 'config'}: web")
    return server, holder
