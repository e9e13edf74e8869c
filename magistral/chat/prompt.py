"""Prompt builders: validated API messages → token ids (+ preprocessed images)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from magistral.chat.messages import TOOLS, template_messages
from magistral.chat.template import ChatTemplate
from magistral.chat.tokenizer import GGUFTokenizer
from magistral.chat.tools import HermesToolFormat, native_tool_format
from magistral.engine.grammar import GrammarCompiler


@dataclass
class EncodedPrompt:
    ids: list[int]
    images: list[torch.Tensor] = field(default_factory=list)  # (3, H, W) each, in prompt order
    chat: dict[str, Any] | None = None  # upstream models: the OpenAI-shaped request to forward


class Prompter(Protocol):
    reasoning: bool
    vision: bool
    fim: bool  # has fill-in-the-middle tokens

    tool_format: Any  # TaggedToolFormat | MistralToolFormat: grammar and parser for calls
    grammar: GrammarCompiler  # constrained decoding over this vocabulary

    def encode(self, messages: list[dict[str, Any]], *, reasoning_prompt: bool,
               safe_prompt: bool = False, tools: list[dict[str, Any]] | None = None) -> EncodedPrompt: ...

    def encode_text(self, text: str, add_special: bool = True) -> list[int]:
        """Raw text (legacy completions) → ids, with BOS where the model expects one (unless
        add_special is False)."""
        ...

    def encode_fim(self, prompt: str, suffix: str) -> list[int]:
        """Code before and after the gap → a prompt whose completion fills the gap."""
        ...


class TemplatePrompter:
    """A GGUF model's own Jinja chat template over its own tokenizer."""

    vision = False

    def __init__(self, template: ChatTemplate, tokenizer: GGUFTokenizer, reasoning: bool = False):
        self.template, self.tokenizer, self.reasoning = template, tokenizer, reasoning
        self.fim = tokenizer.fim_ids is not None
        self.tool_format = HermesToolFormat() if native_tool_format(template.source) else TOOLS
        self.grammar = GrammarCompiler(tokenizer.grammar_tokenizer)

    def encode_text(self, text: str, add_special: bool = True) -> list[int]:
        return self.tokenizer.encode(text, add_bos=None if add_special else False)

    def encode_fim(self, prompt: str, suffix: str) -> list[int]:
        """Prefix-suffix-middle order, as the StarCoder family and llama.cpp's infill build it."""
        if self.tokenizer.fim_ids is None:
            raise ValueError("this model has no fill-in-the-middle tokens")
        pre, suf, mid = self.tokenizer.fim_ids
        bos = [self.tokenizer.bos_id] if self.tokenizer.add_bos and self.tokenizer.bos_id is not None else []
        return [*bos, pre, *self.tokenizer.encode(prompt, add_bos=False), suf,
                *self.tokenizer.encode(suffix, add_bos=False), mid]

    def encode(self, messages: list[dict[str, Any]], *, reasoning_prompt: bool,
               safe_prompt: bool = False, tools: list[dict[str, Any]] | None = None) -> EncodedPrompt:
        """A final assistant message with `prefix: true` is the start of the answer: the
        template renders the conversation before it, then its text is appended verbatim."""
        prefix: Any = ""
        if messages[-1]["role"] == "assistant" and messages[-1].get("prefix"):
            prefix = messages[-1].get("content") or ""
            messages = messages[:-1]
        native = self.tool_format.native
        rendered = self.template.render(template_messages(
            messages, add_reasoning_prompt=reasoning_prompt and self.reasoning, safe_prompt=safe_prompt,
            tools=tools, native_tools=native), tools=tools if native else None)
        if not isinstance(prefix, str):
            prefix = "".join(c.get("text", "") for c in prefix)
        return EncodedPrompt(ids=self.tokenizer.encode(rendered + prefix))
