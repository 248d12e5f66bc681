"""The root of every error edgeloop raises on purpose."""


class EdgeloopError(Exception):
    """Base class: catch this to handle any edgeloop failure."""


class ConfigurationError(EdgeloopError):
    """A setting is missing or has a value that cannot work."""
