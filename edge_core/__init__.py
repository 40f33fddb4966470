"""edge-tc core: task schema, bundle contract, sample formats, SigMF, synthesis, packet assembly.

The bottom layer: it imports nothing else of edge-tc. ``engines`` sits on it, the service
(``edge_daemon``) and the offline tool (``train``) on both.
"""

__version__ = "0.1.0"
