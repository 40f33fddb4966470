"""edge-tc service: sources, batcher, pipeline, publisher, metrics, power (on engines and core)."""

from edge_core import __version__

__all__ = ["__version__"]
