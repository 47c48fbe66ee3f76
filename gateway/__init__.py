"""amr-gateway: read Leviton Series 1000/2000 pulse outputs, reconstruct, persist, publish."""

__all__ = ["__version__"]

__version__ = "0.1.0"
