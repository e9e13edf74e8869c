"""Checks on a parsed chat request that pydantic alone cannot express."""

from __future__ import annotations

from magistral.api.errors import APIError
from magistral.api.schemas import (
    AssistantMessage,
    ChatCompletionRequest,
    ImageURLChunk,
    ToolMessage,
)
from magistral.engine.registry import ServedModel


def check_message_order(req: ChatCompletionRequest) -> None:
    """Mistral's rules: the conversation ends with a user or tool message (or an assistant
    prefix), tool results follow the assistant call that asked for them, and only the last
    assistant message may be a prefix."""
    messages = req.messages
    for i, message in enumerate(messages):
        if isinstance(message, ToolMessage):
            before = messages[i - 1] if i else None
            asked = isinstance(before, AssistantMessage) and before.tool_calls
            if not (asked or isinstance(before, ToolMessage)):
                raise APIError(400, f"Unexpected role 'tool' at messages[{i}]: a tool message must "
                               "follow an assistant message with tool_calls", param="messages")
        if isinstance(message, AssistantMessage) and message.prefix and i != len(messages) - 1:
            raise APIError(400, f"messages[{i}]: only the last assistant message can be a prefix",
                           param="messages")
    last = messages[-1]
    if isinstance(last, AssistantMessage) and not last.prefix:
        raise APIError(400, "Expected last role user or tool (or assistant with prefix True) but "
                       "got assistant", param="messages")
    if last.role == "system":
        raise APIError(400, "Expected last role user or tool (or assistant with prefix True) but "
                       "got system", param="messages")


def check_capabilities(req: ChatCompletionRequest, model: ServedModel) -> None:
    has_image = any(isinstance(chunk, ImageURLChunk) for m in req.messages
                    if isinstance(m.content, list) for chunk in m.content)
    if has_image and not model.vision:
        raise APIError(400, f"Model '{model.id}' does not support images (image_url chunks)",
                       param="messages")
