"""magistral's Python SDK for Mistral-compatible chat APIs (ours, Mistral's, vLLM's):
sync and async clients, image helpers, thinking kept apart from the answer, retries."""

from magistral.client.aio import AsyncClient
from magistral.client.errors import APIConnectionError, APIError, APIStatusError, RateLimitError
from magistral.client.images import image_chunk, image_url, user_message
from magistral.client.sync import Client
from magistral.client.types import ChatResponse, StreamEvent

__all__ = ["APIConnectionError", "APIError", "APIStatusError", "AsyncClient", "ChatResponse", "Client",
           "RateLimitError", "StreamEvent", "image_chunk", "image_url", "user_message"]
