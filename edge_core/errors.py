"""The exception tree: every error edge-tc raises on bad input derives from EdgeTcError."""


class EdgeTcError(Exception):
    """Base of every error that edge-tc raises deliberately."""


class ConfigError(EdgeTcError):
    """A configuration value is missing, unknown, of the wrong type or impossible."""


class ModelError(EdgeTcError):
    """A model file or bundle is corrupt or does not match the task schema."""


class SourceError(EdgeTcError):
    """An IQ source cannot be opened or read."""


class IQFormatError(SourceError):
    """IQ bytes or a recording's metadata are malformed (odd byte count, bad datatype, ...)."""
