"""amr-gateway: read Leviton Series 1000/2000 pulse outputs, reconstruct, persist, publish."""

__version__ = "0.1.0"
