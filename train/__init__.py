"""Offline companion tool: design, train, prune, quantize and export models.

This package imports without torch; `train.models` (and everything that trains) needs the
`train` extra (`pip install 'edge-tc[train]'`).
"""

MODEL_NAMES: tuple[str, ...] = ("cnn2d", "stl1d", "mtl1d", "resnet")
"""The architectures `train.models.build_model` knows, importable without torch for the CLI."""

TRAIN_EXTRA_MISSING = "the train extra is missing: pip install 'edge-tc[train]'"
