"""magistral: a self-hosted Magistral-compatible reasoning model server."""

__version__ = "0.1.0"
