"""A small Python client for magistral's (and Mistral's) chat API."""

from magistral.client.sync import APIStatusError, Client, StreamEvent

__all__ = ["APIStatusError", "Client", "StreamEvent"]
