"""Fake pycuda 2021.1 (tests/fakes/trt8/README.md)."""

VERSION = (2021, 1)
VERSION_STATUS = ""
VERSION_TEXT = "2021.1"
