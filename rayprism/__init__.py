"""rayprism: an embedding platform on Ray."""

__version__ = "0.1.0"
