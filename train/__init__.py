"""Offline companion tool: design, train, prune, quantize and export models."""
