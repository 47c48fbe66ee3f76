"""The fleet collector: every gateway's intervals, reads and events, from the broker into one
database, exactly once (SPEC section 5, docs/fleet.md).

- :mod:`gateway.fleet.schema`: the fleet database's tables (their own metadata and Alembic tree,
  migrations/fleet/), intervals partitioned by month on PostgreSQL;
- :mod:`gateway.fleet.ingest`: one batch of messages into one transaction, keyed so that a
  redelivered message changes nothing; seq gaps opened and closed;
- :mod:`gateway.fleet.collector`: the MQTT client (paho lives here and in sinks/mqtt.py only);
- :mod:`gateway.fleet.readback` and :mod:`gateway.fleet.commands`: status, bill and export.
"""

__all__: list[str] = []  # its modules are used by name: gateway.fleet.collector, .commands, ...
