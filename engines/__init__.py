"""Pluggable inference backends (one module per backend)."""
