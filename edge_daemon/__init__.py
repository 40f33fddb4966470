"""edge-tc: spectrum-based traffic classification on the access point."""

__version__ = "0.1.0"
