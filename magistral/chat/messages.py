"""API messages → the plain role/content dicts a Jinja chat template expects."""

from __future__ import annotations

from typing import Any

from magistral.chat.reasoning import REASONING_SYSTEM_PROMPT
from magistral.chat.tools import TaggedToolFormat, arguments_object

TOOLS = TaggedToolFormat()  # how templates without tool support see tools, calls and results

# Mistral's `safe_prompt` guardrail, prepended to the system prompt
SAFE_PROMPT = ("Always assist with care, respect, and truth. Respond with utmost utility yet "
               "securely. Avoid harmful, unethical, prejudiced, or negative content. Ensure replies "
               "promote fairness and positivity.")


def chunks_to_text(content: str | list[dict[str, Any]] | None, think_open: str = "<think>",
                   think_close: str = "</think>") -> str:
    """Flatten content chunks; a thinking chunk becomes a tagged span the model can read."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for chunk in content:
        if chunk["type"] == "text":
            parts.append(chunk["text"])
        elif chunk["type"] == "thinking":
            inner = "".join(c["text"] for c in chunk["thinking"])
            parts.append(f"{think_open}{inner}{think_close}")
        else:
            raise ValueError(f"content chunk of type {chunk['type']!r} cannot be rendered as text")
    return "".join(parts)


def template_messages(messages: list[dict[str, Any]], *, add_reasoning_prompt: bool,
                      safe_prompt: bool = False, tools: list[dict[str, Any]] | None = None,
                      native_tools: bool = False) -> list[dict[str, Any]]:
    """Messages (API dicts, already validated) → [{role, content: str}] for the template. With
    `native_tools` the template renders tools itself: calls stay `tool_calls` (arguments as
    objects, as Hugging Face templates expect) and results stay `tool` messages. Otherwise tools,
    calls and results are written in the documented tagged format (chat/tools.py): the tools in
    the system prompt, calls as assistant text, results as user turns."""
    out: list[dict[str, Any]] = []
    has_system = any(m["role"] == "system" for m in messages)
    if add_reasoning_prompt and not has_system:
        out.append({"role": "system", "content": chunks_to_text(REASONING_SYSTEM_PROMPT)})
    for message in messages:
        role, text = message["role"], chunks_to_text(message.get("content"))
        if native_tools and role == "assistant" and message.get("tool_calls"):
            out.append({"role": role, "content": text, "tool_calls": [
                {"id": c.get("id"), "type": "function", "function": {
                    "name": c["function"]["name"], "arguments": arguments_object(c["function"]["arguments"])}}
                for c in message["tool_calls"]]})
            continue
        if native_tools and role == "tool":
            out.append({"role": role, "content": text, "tool_call_id": message.get("tool_call_id"),
                        "name": message.get("name")})
            continue
        if role == "assistant" and message.get("tool_calls"):
            text = (text + "\n" if text else "") + TOOLS.render_calls(message["tool_calls"])
        elif role == "tool":
            role, text = "user", TOOLS.render_result(text)
        out.append({"role": role, "content": text})
    if tools and not native_tools:
        described = TOOLS.system_prompt(tools)
        system = next((m for m in out if m["role"] == "system"), None)
        if system is None:
            out.insert(0, {"role": "system", "content": described})
        else:
            system["content"] = f"{system['content']}\n\n{described}"
    if safe_prompt:
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{SAFE_PROMPT}\n\n{out[0]['content']}"}
        else:
            out.insert(0, {"role": "system", "content": SAFE_PROMPT})
    return out
