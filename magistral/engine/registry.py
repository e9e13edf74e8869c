"""The models a server offers: weights + tokenizer + template + engine, found by id or alias."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from magistral.chat.messages import template_messages
from magistral.chat.template import ChatTemplate
from magistral.chat.tokenizer import GGUFTokenizer
from magistral.engine.engine import Engine
from magistral.model.load import load_gguf

DEFAULT_MODEL_ID = "smollm2-135m-instruct"
DEFAULT_ALIASES = ["magistral-medium-latest"]


@dataclass
class ServedModel:
    id: str
    engine: Engine
    tokenizer: GGUFTokenizer
    template: ChatTemplate
    max_context_length: int
    aliases: list[str] = field(default_factory=list)
    description: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    reasoning: bool = False  # writes [THINK] traces; gets the reasoning system prompt
    vision: bool = False
    function_calling: bool = False
    default_temperature: float = 0.7
    owned_by: str = "magistral"

    def encode_chat(self, messages: list[dict[str, Any]], *, reasoning_prompt: bool,
                    safe_prompt: bool = False) -> list[int]:
        """Validated API messages → prompt token ids.

        A final assistant message with `prefix: true` is the start of the answer: the template
        renders the conversation before it, then its text is appended verbatim.
        """
        prefix = ""
        if messages[-1]["role"] == "assistant" and messages[-1].get("prefix"):
            prefix = messages[-1].get("content") or ""
            messages = messages[:-1]
        rendered = self.template.render(template_messages(
            messages, add_reasoning_prompt=reasoning_prompt and self.reasoning,
            safe_prompt=safe_prompt))
        if not isinstance(prefix, str):
            prefix = "".join(c.get("text", "") for c in prefix)
        return self.tokenizer.encode(rendered + prefix)


class ModelRegistry:
    def __init__(self, models: list[ServedModel]):
        self.models = models
        self._by_name = {name: m for m in models for name in [m.id, *m.aliases]}

    def get(self, name: str) -> ServedModel | None:
        return self._by_name.get(name)

    def shutdown(self) -> None:
        for model in self.models:
            model.engine.shutdown()


def load_model(spec: str | None = None, *, aliases: list[str] | None = None,
               max_active: int = 8) -> ServedModel:
    """`spec`: None or the default id for the embedded SmolLM2, else a path to a .gguf file."""
    torch.set_grad_enabled(False)
    is_default = spec in (None, "", DEFAULT_MODEL_ID, "default")
    loaded = load_gguf(None if is_default else Path(spec))
    meta = loaded.metadata
    tokenizer = GGUFTokenizer(meta)
    template = ChatTemplate(meta.get("tokenizer.chat_template"), tokenizer.bos_token,
                            tokenizer.eos_token)
    model_id = DEFAULT_MODEL_ID if is_default else loaded.path.stem.lower()
    reasoning = "[THINK]" in set(meta["tokenizer.ggml.tokens"])
    return ServedModel(
        id=model_id, engine=Engine(loaded.model, tokenizer, max_active=max_active),
        tokenizer=tokenizer, template=template, max_context_length=loaded.model.args.max_seq_len,
        aliases=list(DEFAULT_ALIASES if is_default and aliases is None else aliases or []),
        description=f"{meta.get('general.name', model_id)} ({loaded.path.name})",
        reasoning=reasoning)
